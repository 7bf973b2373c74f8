# The Sidekiq jobs the benchmarks run; bench/bench_jobs.py defines the same ones for Sidepunch (it also has
# AsyncSleepJob, which Sidekiq has no counterpart for).
# Loaded by `sidekiq -r bench/ruby/jobs.rb` and by bench/ruby/enqueue.rb.
require "sidekiq"

# Debian pairs Sidekiq 6.4.1 with redis-rb 4.8, which prints a deprecation warning for every SADD Sidekiq's
# client sends (one per push). Writing that line would slow Sidekiq's enqueue unfairly, so silence it the way
# redis-rb 4.8 documents (Sidekiq ignores SADD's reply).
Redis.sadd_returns_boolean = false
Redis.silence_deprecations = true

LATENCY_KEY = "bench:latency"
CPU_KEY = "bench:cpu"
COUNTER_KEY = "bench:counter"
SLEEP_SECONDS = 0.05

# Sidekiq logs a "start" and a "done" line for every job at INFO, as sidepunchd does. The harness sets the
# same level for both (BENCH_SIDEKIQ_LOG_LEVEL here, SIDEPUNCH_LOG_LEVEL there): warn unless --job-logs on.
Sidekiq.configure_server do |_config|
  level = ENV.fetch("BENCH_SIDEKIQ_LOG_LEVEL", "warn")
  Sidekiq.logger.level = Logger.const_get(level.upcase)
end

module BenchCpu
  # Pure-Ruby CPU work, the same loop as bench_jobs.burn; each side is calibrated to ~25 ms.
  def self.burn(loops)
    x = 0
    i = 0
    while i < loops
      x = (x * 31 + i) & 0xFFFFFFFF
      i += 1
    end
    x
  end
end

class NoopJob
  include Sidekiq::Worker

  def perform(*args)
  end
end

# W1's realistic job: one round trip through Sidekiq's own pool (a job's usual way to reach Redis).
class IncrJob
  include Sidekiq::Worker

  def perform(*args)
    Sidekiq.redis { |c| c.incr(COUNTER_KEY) }
  end
end

# W5: waits 50 ms as if on I/O.
class SleepJob
  include Sidekiq::Worker

  def perform(*args)
    sleep(SLEEP_SECONDS)
  end
end

class LatencyJob
  include Sidekiq::Worker

  # args[0] is the enqueue stamp a client middleware set just before the write (as enqueued_at is).
  def perform(stamp)
    latency = Time.now.to_f - stamp
    Sidekiq.redis { |c| c.rpush(LATENCY_KEY, latency.to_s) }
  end
end

class CpuJob
  include Sidekiq::Worker

  def perform(loops)
    started = Time.now.to_f
    BenchCpu.burn(loops)
    Sidekiq.redis { |c| c.rpush(CPU_KEY, "#{started} #{Time.now.to_f} #{Process.pid}") }
  end
end
