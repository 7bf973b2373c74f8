# Runs failures through Sidekiq's own retry logic (Sidekiq::JobRetry#global and #local, as
# Sidekiq::Processor nests them) and prints where each job ended up. Reads a JSON array of cases on stdin:
#   {"jobstr": <job JSON exactly as fetched>, "queue": <queue it was fetched from>,
#    "known": <false: it fails before the worker exists>, "worker_retry": <the worker's retry option, if any>}
# The exception is always RuntimeError("boom"), raised by the job or, for "known": false, before the worker
# is instantiated (as when its class cannot be loaded).
require_relative "interop_helper"
require "sidekiq/job_retry"

deaths = []
Sidekiq.death_handlers << ->(job, _exception) { deaths << job["jid"] }

outcomes = {}
JSON.parse($stdin.read).each do |c|
  jid = JSON.parse(c["jobstr"])["jid"]
  worker_class = Class.new { include Sidekiq::Worker }
  worker_class.sidekiq_options("retry" => c["worker_retry"]) if c.key?("worker_retry")
  retrier = Sidekiq::JobRetry.new
  begin
    retrier.global(c["jobstr"], c["queue"]) do
      raise "boom" unless c["known"]
      retrier.local(worker_class.new, c["jobstr"], c["queue"]) { raise "boom" }
    end
    outcomes[jid] = "returned"
  rescue Sidekiq::JobRetry::Handled => e
    outcomes[jid] = e.class.name
  end
end

stored = {}
%w[retry dead].each do |set|
  Sidekiq.redis { |conn| conn.zrange(set, 0, -1, with_scores: true) }.each do |member, score|
    stored[JSON.parse(member)["jid"]] = { "set" => set, "payload" => member, "score" => score }
  end
end
emit("stored" => stored, "deaths" => deaths, "outcomes" => outcomes)
