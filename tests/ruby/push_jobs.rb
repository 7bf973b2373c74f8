# Pushes jobs the way a Ruby app does: Sidekiq::Client.push with every JSON type, Worker.perform_async,
# perform_in, push_bulk (immediate and with an 'at' per job), a namespaced class. Prints, per job, the jid,
# how it was pushed and JSON.generate(args) (the exact bytes Sidekiq put in the payload's "args").
require_relative "interop_helper"

class InteropRecord
  include Sidekiq::Worker
  sidekiq_options queue: "interop", retry: 3, tags: ["ruby", "interop"]
end

module Interop
  class NestedWorker
    include Sidekiq::Worker
  end
end

EVERY_TYPE = [
  "plain", "",
  "unicode: héllo wörld ✓ 日本語 😀 \u{10FFFF}",
  "escapes: \"quote\" \\backslash\\ /slash\n\t\r\b\f \u0001\u001f \u007f \u2028\u2029 </script> &amp;",
  0, 1, -1, 42, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**64 + 1, -(2**64), 2**100, -(10**40),
  0.0, -0.0, 1.5, -2.25, 0.1, 3.141592653589793, 100.0, 123456789012345.67, 0.0001,
  1.0e+15, 1.0e+16, -1.0e+15, 1.234e+20, 1.0e-05, 2.5e-10, 1.7976931348623157e+308, 5.0e-324,
  true, false, nil,
  [], {}, [[], [[]], {}],
  [1, "two", 3.0, nil, [true, [false, [nil]]]],
  { "a" => 1, "b" => [1, 2, { "c" => nil }], "ключ" => { "x" => true, "big" => 2**70, "f" => 1.0e+15 },
    "" => "", "quote\"key" => "v", "nested" => { "deeper" => { "deepest" => [1.0e-07, "✓"] } } },
].freeze

jobs = []
record = lambda do |how, jid, args|
  raise "push #{how} returned no jid" unless jid.is_a?(String) && jid.size == 24
  jobs << { "how" => how, "jid" => jid, "args" => args, "args_json" => JSON.generate(args) }
end

record.call("Client.push every type", Sidekiq::Client.push("class" => "InteropRecord", "args" => EVERY_TYPE),
  EVERY_TYPE)
# Each JSON type alone as the only argument, so a failure points at the type.
EVERY_TYPE.each_with_index do |value, i|
  record.call("Client.push single #{i}", Sidekiq::Client.push("class" => "InteropRecord", "args" => [value]),
    [value])
end

args = [2**64 + 7, 1.0e+15, "ä", { "k" => [nil, true] }]
record.call("perform_async", InteropRecord.perform_async(*args), args)
args = ["nested class", 2**65]
record.call("namespaced perform_async", Interop::NestedWorker.perform_async(*args), args)

args = ["scheduled with at", 1.0e+15, -(2**70)]
record.call("Client.push at", Sidekiq::Client.push("class" => "InteropRecord", "args" => args,
  "at" => Time.now.to_f + 1.0), args)
args = ["perform_in", { "when" => "soon" }]
record.call("perform_in", InteropRecord.perform_in(1, *args), args)

bulk = [["bulk", 1], ["bulk", 2**64], ["bulk", 1.0e+16, nil], ["bulk ✓", { "x" => [1.5] }]]
InteropRecord.perform_bulk([]) # no-op, as in Sidekiq
Sidekiq::Client.push_bulk("class" => InteropRecord, "args" => bulk).each_with_index do |jid, i|
  record.call("push_bulk", jid, bulk[i])
end
bulk_at = [["bulk at past", 1], ["bulk at soon", 2]]
Sidekiq::Client.push_bulk("class" => "Interop::NestedWorker", "args" => bulk_at,
  "at" => [Time.now.to_f - 30, Time.now.to_f + 1.0]).each_with_index do |jid, i|
  record.call("push_bulk at", jid, bulk_at[i])
end

emit("version" => Sidekiq::VERSION, "jobs" => jobs,
  "scheduled" => Sidekiq::ScheduledSet.new.size, "queues" => Sidekiq::Stats.new.queues)
