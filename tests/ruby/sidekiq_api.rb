# Reads and drives a Redis that sidepunchd works on, through Sidekiq's own API (sidekiq/api), and prints
# what Sidekiq saw as JSON. Usage: ruby sidekiq_api.rb COMMAND [ARG]
#   inspect              Stats, History, Queues, ScheduledSet, RetrySet, DeadSet, ProcessSet, Workers
#   reschedule_retries   SortedEntry#reschedule every retry entry an hour later (re-dumps the JSON itself)
#   requeue_all          RetrySet#retry_all, DeadSet#retry_all, SortedEntry#add_to_queue of each scheduled job
#   quiet_all / stop_all Process#quiet! / Process#stop! for every live process
#   backtrace LINES_JSON Sidekiq's own compress_backtrace of LINES_JSON; reads ARGV[2] (a compressed
#                        backtrace from Sidepunch) back with JobRecord#error_backtrace
require_relative "interop_helper"

def job_record(job)
  {
    "klass" => job.klass, "display_class" => job.display_class, "jid" => job.jid, "queue" => job.queue,
    "args" => job.args, "display_args" => job.display_args, "tags" => job.tags,
    "enqueued_at" => job.enqueued_at&.to_f, "created_at" => job.created_at.to_f,
    "error_class" => job["error_class"], "error_message" => job["error_message"],
    "retry_count" => job["retry_count"], "failed_at" => job["failed_at"], "retried_at" => job["retried_at"],
    "retry" => job["retry"], "error_backtrace" => job.error_backtrace
  }
end

def sorted_entry(entry)
  job_record(entry).merge("score" => entry.score, "at" => entry.at.to_f, "error?" => entry.error?)
end

def inspect_all
  stats = Sidekiq::Stats.new
  history = Sidekiq::Stats::History.new(1)
  processes = Sidekiq::ProcessSet.new
  workers = Sidekiq::Workers.new
  {
    "stats" => %i[processed failed enqueued scheduled_size retry_size dead_size processes_size workers_size
                  default_queue_latency].to_h { |name| [name.to_s, stats.public_send(name)] },
    "stats_queues" => stats.queues,
    "history" => { "processed" => history.processed, "failed" => history.failed },
    "queues" => Sidekiq::Queue.all.map { |q|
      { "name" => q.name, "size" => q.size, "latency" => q.latency, "jobs" => q.map { |j| job_record(j) } }
    },
    "scheduled" => Sidekiq::ScheduledSet.new.map { |e| sorted_entry(e) },
    "retries" => Sidekiq::RetrySet.new.map { |e| sorted_entry(e) },
    "dead" => Sidekiq::DeadSet.new.map { |e| sorted_entry(e) },
    "processes" => processes.map { |p|
      %w[identity hostname pid tag concurrency queues labels started_at busy beat quiet rss rtt_us]
        .to_h { |k| [k, p[k]] }.merge("stopping?" => p.stopping?)
    },
    "process_set_size" => processes.size,
    "total_concurrency" => processes.total_concurrency,
    "workers" => workers.map { |process, tid, work|
      { "process" => process, "tid" => tid, "queue" => work["queue"], "run_at" => work["run_at"],
        "payload" => work["payload"] }
    },
    "workers_size" => workers.size
  }
end

case ARGV[0]
when "inspect"
  emit(inspect_all)
when "reschedule_retries"
  retries = Sidekiq::RetrySet.new
  before = retries.map { |e| [e.jid, e.score] }.to_h
  retries.each { |e| e.reschedule(Time.now.to_f + 3600) }
  after = Sidekiq::RetrySet.new.map { |e| [e.jid, e.score] }
  emit("before" => before, "after" => after, "size" => Sidekiq::RetrySet.new.size)
when "requeue_all"
  retried = Sidekiq::RetrySet.new.map(&:jid) + Sidekiq::DeadSet.new.map(&:jid)
  scheduled = Sidekiq::ScheduledSet.new.map(&:jid)
  Sidekiq::RetrySet.new.retry_all
  Sidekiq::DeadSet.new.retry_all
  Sidekiq::ScheduledSet.new.each(&:add_to_queue)
  emit("retried" => retried, "scheduled" => scheduled, "retry_size" => Sidekiq::RetrySet.new.size,
    "dead_size" => Sidekiq::DeadSet.new.size, "scheduled_size" => Sidekiq::ScheduledSet.new.size)
when "quiet_all", "stop_all"
  signalled = Sidekiq::ProcessSet.new.map { |p|
    ARGV[0] == "quiet_all" ? p.quiet! : p.stop!
    p.identity
  }
  emit("signalled" => signalled)
when "backtrace"
  lines = JSON.parse(ARGV[1])
  require "sidekiq/job_retry"
  # What Sidekiq::JobRetry#compress_backtrace writes (a private method, so called with send).
  compressed = Sidekiq::JobRetry.new.send(:compress_backtrace, lines)
  emit("compressed" => compressed,
    "read_ours" => Sidekiq::JobRecord.new({ "error_backtrace" => ARGV[2] }).error_backtrace,
    "read_own" => Sidekiq::JobRecord.new({ "error_backtrace" => compressed }).error_backtrace)
else
  abort "unknown command #{ARGV[0].inspect}"
end
