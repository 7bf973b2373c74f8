"""The one connection a Client keeps between pushes (client/hot.py): reused by the next push, at most one held
outside the pool, never across a fork, and never taken from a redis client the app passed in. Real Redis."""
import threading

import sidepunch
from sidepunch.client.hot import HotConnection


def pool_counts(pool):
    return len(pool._available_connections), len(pool._in_use_connections)


def test_pushes_from_one_thread_reuse_one_connection(redis_server, r):
    client = sidepunch.Client(redis_server.url)
    client.push({"class": "A", "args": [0]})
    kept = client._hot._conn
    for i in range(50):
        client.push({"class": "A", "args": [i]})
    assert client._hot._conn is kept and pool_counts(client.redis.connection_pool) == (0, 1)
    assert r.llen("queue:default") == 51


def test_concurrent_pushes_all_land_and_one_connection_at_most_stays_out(redis_server, r):
    client = sidepunch.Client(redis_server.url)
    threads = [threading.Thread(target=lambda n=n: [client.push({"class": "A", "args": [n, i]}) for i in range(100)])
               for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.llen("queue:default") == 800
    available, in_use = pool_counts(client.redis.connection_pool)
    assert in_use == 1 and client._hot._conn is not None  # the kept one; the others went back to the pool


def test_a_connection_of_another_process_or_pool_is_never_used(redis_server):
    client = sidepunch.Client(redis_server.url)
    client.push({"class": "A", "args": [0]})
    kept = client._hot._conn
    kept.pid = -1  # as a forked child sees its parent's connection
    client.push({"class": "A", "args": [1]})
    assert client._hot._conn is not kept
    hot, pool = HotConnection(), client.redis.connection_pool
    other = sidepunch.Client(redis_server.url).redis.connection_pool
    conn = pool.get_connection()
    hot.give(pool, conn)
    assert hot.take(other) is not conn  # kept for another pool: that pool's own connection instead
    pool.release(conn)


def test_a_client_over_the_apps_redis_keeps_none(r):
    client = sidepunch.Client(redis=r)
    client.push({"class": "A", "args": [0]})
    assert client._hot._conn is None and pool_counts(r.connection_pool)[1] == 0
