"""Redis Sentinel: a primary, a replica and three sentinels on loopback; fail over under load."""
import collections
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

import sidepunch
from sidepunch.embedded import RedisServer, find_redis_server, free_port
from conftest import APPS, wait_for

sys.path.insert(0, str(APPS))
import testjobs  # noqa: E402


@pytest.fixture
def sentinel_cluster(tmp_path):
    binary = find_redis_server()
    primary = RedisServer().start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    sentinels = []
    ports = [free_port() for _ in range(3)]
    cluster = {"url": "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/mymaster/0",
               "sentinel_ports": ports, "primary": primary, "replica": replica}
    try:
        for port in ports:
            conf = tmp_path / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                            f"sentinel monitor mymaster 127.0.0.1 {primary.port} 2\n"
                            "sentinel down-after-milliseconds mymaster 1000\n"
                            "sentinel failover-timeout mymaster 5000\n")
            log = open(tmp_path / f"sentinel-{port}.log", "wb")
            sentinels.append(subprocess.Popen([binary, str(conf), "--sentinel"], stdout=log,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        probe = redis.Redis(port=ports[0])
        wait_for(lambda: _ping(probe) and probe.execute_command("SENTINEL", "REPLICAS", "mymaster"), 20,
                 message="sentinels to see the replica")
        wait_for(lambda: int(redis.Redis(port=replica.port).info("replication")["master_link_status"] == "up"),
                 20, message="replication link")
        yield cluster
    finally:
        for proc in sentinels:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        replica.stop()
        cluster["primary"].stop()


def _master_port(client):
    try:
        return client.redis.connection_pool.get_master_address()[1]
    except redis.ConnectionError:  # MasterNotFoundError while the sentinels agree on a new primary
        return None


def _ping(client):
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def test_primary_crash_fails_over_under_load(daemon, sentinel_cluster):
    """SIGKILL the primary while jobs are pushed and run; the daemon and the client carry on.

    Only writes Redis confirmed as replicated (WAIT 1) count: a write the primary acknowledged but never
    replicated dies with it, whatever the client does, so the producer and the job check with WAIT.
    """
    url = sentinel_cluster["url"]
    client = sidepunch.Client(url)
    pushed: list[str] = []
    stop = threading.Event()

    def produce():
        for i in range(3000):
            if stop.is_set():
                return
            try:
                client.push({"class": testjobs.ReplicatedRecord, "args": [str(i)]})
                if client.redis.execute_command("WAIT", 1, 2000) >= 1:
                    pushed.append(str(i))
            except redis.RedisError:
                pass  # the push raised after its retries: the caller knows it may not have landed
            time.sleep(0.003)

    d = daemon("--workers", "2", "--threads", "5", "-r", "testjobs", "--poll-interval", "1", url=url,
               env={"REDIS_URL": url})
    d.wait_children(2)
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        r = client.redis
        wait_for(lambda: r.llen("done") > 200, 30, message="work before the failover")
        before = r.llen("done")
        killed = time.monotonic()
        os.kill(sentinel_cluster["primary"].process.pid, signal.SIGKILL)
        wait_for(lambda: _master_port(client) == sentinel_cluster["replica"].port, 30,
                 message="the replica to be promoted")
        # The crashed box comes back; Sentinel makes it a replica of the new primary, so WAIT 1 works again.
        sentinel_cluster["primary"].stop()
        sentinel_cluster["primary"] = RedisServer(port=sentinel_cluster["primary"].port).start()
        wait_for(lambda: r.llen("done") > before + 100, 30, interval=0.02, message="work after the failover")
        pause = time.monotonic() - killed
        producer.join(60)
    finally:
        stop.set()
        producer.join(60)
    wait_for(lambda: set(pushed) <= {v.decode() for v in r.lrange("done", 0, -1)}, 90,
             message="every replicated job to complete")
    done = collections.Counter(v.decode() for v in r.lrange("done", 0, -1))
    print(f"\nsentinel failover: {len(pushed)} replicated jobs pushed under load, lost 0, "
          f"duplicates {sum(n - 1 for n in done.values())}, work resumed {pause:.1f}s after the primary died")
    assert len(pushed) > 2000
    assert d.proc.poll() is None and "reachable again" in d.log()
    d.signal(signal.SIGTERM)
    assert d.wait(60) == 0
