# Sidekiq's own write paths, for byte-for-byte comparison with Sidepunch's. Usage:
#   ruby client_push.rb push < ITEMS_JSON   Sidekiq::Client.push each item of a JSON array; prints the jids
#   ruby client_push.rb enqueue_due          one pass of Sidekiq's scheduled poller (Scheduled::Enq)
require_relative "interop_helper"
require "sidekiq/scheduled"

case ARGV[0]
when "push"
  items = JSON.parse($stdin.read)
  emit("jids" => items.map { |item| Sidekiq::Client.push(item) })
when "enqueue_due"
  Sidekiq::Scheduled::Enq.new.enqueue_jobs
  emit("schedule" => Sidekiq::ScheduledSet.new.size, "retry" => Sidekiq::RetrySet.new.size)
else
  abort "unknown command #{ARGV[0].inspect}"
end
