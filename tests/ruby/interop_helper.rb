# Shared setup for the Ruby side of tests/test_interop.py: point Sidekiq's client and API at the test
# Redis ($REDIS_URL), keep Sidekiq's log off stdout, and print one JSON document as the last stdout line.
require "json"
require "logger"
require "sidekiq"
require "sidekiq/api"

Redis.silence_deprecations = true

abort "REDIS_URL is not set" unless ENV["REDIS_URL"]

Sidekiq.configure_client do |config|
  config.redis = { url: ENV["REDIS_URL"] }
end
# Sidekiq::API goes through Sidekiq.redis, which in a client process uses the client configuration above.
Sidekiq.logger = Logger.new($stderr)

def emit(result)
  $stdout.puts JSON.generate(result)
  $stdout.flush
end
