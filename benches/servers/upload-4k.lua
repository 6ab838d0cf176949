-- wrk script: POST distinct 4 KiB bodies (each names its thread and sequence number in its
-- first 24 bytes, so no two dedup) to the librarian's bucket "bench". Used by librarian.sh and
-- uploads-cpu.sh. Another size in bytes (at least 24) after wrk's `--`: `wrk ... -- 1024`.
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args)
    counter = 0
    pad = string.rep("u", (tonumber(args[1]) or 4096) - 24)
end
request = function()
    counter = counter + 1
    local name = string.format("t%02d-%09d", tid, counter)
    return wrk.format("POST", "/buckets/bench/files?filename=" .. name,
        {["Content-Type"] = "application/octet-stream"}, string.format("%-24s", name) .. pad)
end
