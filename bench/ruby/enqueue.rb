# Sidekiq's side of the enqueue work, one fresh process per call (bench/enqueue.py is Sidepunch's).
#
#   ruby bench/ruby/enqueue.rb single N | bulk N [KIND] | cpu COUNT LOOPS | paced COUNT RATE | calibrate MS
#
# KIND: noop (default), incr or sleep. Prints one JSON line. Timings cover only the pushes: Ruby's start-up and the first connection (a PING
# before the clock starts) are outside them. Redis comes from $REDIS_URL.
require "json"
require_relative "jobs"

BULK = 1000

def mono
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

# Client middleware, last in the chain: args[0] = now, taken where Sidekiq takes enqueued_at.
class StampMiddleware
  def call(_worker_class, job, _queue, _redis_pool)
    job["args"][0] = Time.now.to_f
    yield
  end
end

def single(n)
  started = mono
  n.times { |i| NoopJob.perform_async(i) }
  { seconds: mono - started, jobs: n }
end

KINDS = { "noop" => NoopJob, "incr" => IncrJob, "sleep" => SleepJob }.freeze

def bulk(n, kind = "noop")
  job = KINDS.fetch(kind) { abort("unknown job kind #{kind.inspect}") }
  started = mono
  (0...n).each_slice(BULK) do |slice|
    Sidekiq::Client.push_bulk("class" => job, "args" => slice.map { |i| [i] })
  end
  { seconds: mono - started, jobs: n }
end

def cpu(count, loops)
  Sidekiq::Client.push_bulk("class" => CpuJob, "args" => Array.new(count) { [loops] })
  { jobs: count }
end

def paced(count, rate)
  Sidekiq.configure_client do |config|
    config.client_middleware { |chain| chain.add StampMiddleware }
  end
  started = mono
  worst = 0.0
  count.times do |i|
    due = started + i / rate
    now = mono
    if due > now
      sleep(due - now)
    else
      worst = [worst, now - due].max
    end
    LatencyJob.perform_async(0.0)
  end
  { seconds: mono - started, jobs: count, worst_late_ms: worst * 1000 }
end

# The fastest of `times` timings: on a shared machine the slower ones measure the neighbours.
def fastest(loops, times)
  Array.new(times) do
    t = mono
    BenchCpu.burn(loops)
    mono - t
  end.min
end

# The cost per loop is the fastest of 20 short (~5 ms) timings: on a shared machine a slower timing
# measures the neighbours, and short samples are likely to find a quiet moment.
def calibrate(ms)
  probe = 10_000
  probe *= 2 while fastest(probe, 1) <= 0.005
  loops = [1, (ms / 1000.0 / (fastest(probe, 20) / probe)).to_i].max
  loops = [1, (loops * ms / 1000.0 / fastest(loops, 5)).to_i].max # one correction at full length
  { loops: loops, ms: fastest(loops, 5) * 1000 }
end

mode, *rest = ARGV
Sidekiq.redis { |c| c.ping } unless mode == "calibrate"
out =
  case mode
  when "single" then single(rest[0].to_i)
  when "bulk" then bulk(rest[0].to_i, rest[1] || "noop")
  when "cpu" then cpu(rest[0].to_i, rest[1].to_i)
  when "paced" then paced(rest[0].to_i, rest[1].to_f)
  when "calibrate" then calibrate(rest[0].to_f)
  else abort("unknown mode #{mode.inspect}")
  end
puts JSON.generate(out)
