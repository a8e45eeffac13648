#!/usr/bin/env python3
"""Writes the seed corpora of the whole-connection fuzzers (fuzz/corpus/{relay,login,console_session,kv_session}),
in the chunk format of fuzz/conn_harness.h. Run from the repository root; the files are committed."""
import struct, os
def msg(k, body=b""): return k + struct.pack("!I", len(body)+4) + body
def q(sql): return msg(b"Q", sql.encode()+b"\0")
def parse(name, sql, oids=()): return msg(b"P", name.encode()+b"\0"+sql.encode()+b"\0"+struct.pack("!H",len(oids))+b"".join(struct.pack("!I",o) for o in oids))
def bind(portal, stmt, params=(), results=()):
    b = portal.encode()+b"\0"+stmt.encode()+b"\0"+struct.pack("!H",0)+struct.pack("!H",len(params))
    for p in params: b += struct.pack("!I", len(p)) + p
    return msg(b"B", b + struct.pack(f"!H{len(results)}H", len(results), *results))
def describe(kind, name): return msg(b"D", kind+name.encode()+b"\0")
def close(kind, name): return msg(b"C", kind+name.encode()+b"\0")
def execute(portal="", n=0): return msg(b"E", portal.encode()+b"\0"+struct.pack("!I",n))
SYNC = msg(b"S"); FLUSH = msg(b"H"); TERM = msg(b"X")
def chunks(*parts, server=False):
    out=b""
    for p in parts:
        if isinstance(p, tuple):  # (server bytes,)
            data, tag0 = p[0], 1
        else:
            data, tag0 = p, 0
        while True:
            n = min(len(data), 255 + 127*256)
            hi, lo = divmod(n, 256)
            out += bytes([(hi << 1) | tag0, lo]) + data[:n]
            data = data[n:]
            if not data: break
    return out
def write(d, name, b):
    open(f"fuzz/corpus/{d}/{name}", "wb").write(b)

# relay: mode byte 0 session, 1 transaction, 2 statement (+0x80 Terminate)
for mode, mname in ((0,"session"),(1,"transaction"),(2,"statement")):
    write("relay", f"{mname}-simple", bytes([mode|0x80]) + chunks(q("select 1"), q("begin"), q("select 2"), q("commit")))
    write("relay", f"{mname}-extended-named", bytes([mode]) + chunks(
        parse("s1","select $1",(23,)) + bind("","s1",(b"42",)) + describe(b"P","") + execute() + SYNC,
        bind("","s1",(b"7",)) + execute() + close(b"S","s1") + SYNC))
    write("relay", f"{mname}-empty-query", bytes([mode]) + chunks(q("select 1"), b"Q\0\0\0\x04"))
write("relay", "transaction-set-discard", bytes([1]) + chunks(q("set search_path = x"), q("select 1"), q("discard all"), q("deallocate all")))
write("relay", "transaction-error-pipeline", bytes([1]) + chunks(parse("e","select error") + bind("","e") + execute() + SYNC + parse("ok","select 1") + SYNC))
write("relay", "transaction-copy", bytes([1]) + chunks(q("copy t from stdin"), msg(b"d", b"1\n"), msg(b"c"), q("copy t from stdin"), msg(b"f", b"no\0")))
write("relay", "transaction-deallocate", bytes([1]) + chunks(parse("p1","select 1") + SYNC, q("deallocate p1"), parse("", "deallocate p1") + bind("","") + execute() + SYNC))
write("relay", "transaction-many-statements", bytes([1]) + chunks(b"".join(parse(f"s{i}", f"select {i}") for i in range(8)) + SYNC, b"".join(bind("",f"s{i}")+execute() for i in range(8)) + SYNC))
write("relay", "session-server-garbage", bytes([0]) + chunks(q("select 1"), (b"Z\0\0\0\x05I",), (msg(b"S", b"TimeZone\0UTC\0"),), (b"\xff\xff\xff\xff\xff",)))
write("relay", "transaction-function-call", bytes([1]) + chunks(msg(b"F", struct.pack("!IHHH", 1, 0, 0, 0) + struct.pack("!H",0)), q("select 1")))
write("relay", "statement-begin", bytes([2]) + chunks(q("begin"), parse("","start transaction") + SYNC))
# names past 63 bytes, cut in the read buffer (relay.c's cut_names), one arriving in pieces
for mode, mname in ((0,"session"),(1,"transaction")):
    long_msgs = (parse("n"*100, "select 1") + bind("p"*80, "n"*63+"x") + describe(b"P", "p"*70) + execute("p"*90)
                 + close(b"S", "n"*64) + SYNC)
    write("relay", f"{mname}-long-names", bytes([mode]) + chunks(long_msgs[:37], long_msgs[37:120], long_msgs[120:]))
# a Parse of a name in use (relay.c's parse_taken), alone, in a pipeline, and in a block
write("relay", "transaction-parse-taken", bytes([1]) + chunks(parse("s1", "select 1") + SYNC,
      parse("s1", "select 2") + bind("", "s1") + execute() + SYNC, q("begin"), parse("s1", "select 3") + SYNC,
      q("rollback"), parse("s2", "select 1") + parse("s2", "select 1") + SYNC))
# replication connections (mode byte 60 physical, 61 logical): bytes unread both ways, the
# server's framed (a CopyBoth stream, a message split across writes, an impossible length)
write("relay", "replication-physical", bytes([60|0x80]) + chunks(q("IDENTIFY_SYSTEM"), q("START_REPLICATION 0/0"),
      (msg(b"W", b"\0\0\0"),), (msg(b"d", b"w" + b"\0"*24 + b"wal")[:9],), (b"\0"*20,), msg(b"d", b"r" + b"\0"*33), msg(b"c")))
write("relay", "replication-logical", bytes([61]) + chunks(q("select 1"), parse("", "select 1") + SYNC,
      (b"E\0\0\0\x03",), q("select 2")))
write("relay", "transaction-unknown-type", bytes([1]) + chunks(q("select 1"), msg(b"?", b"x")))
write("relay", "transaction-long-name", bytes([1]) + chunks(parse("n"*64, "select 1") + SYNC))
write("relay", "transaction-big-query", bytes([1]) + chunks(q("select '" + "x"*5000 + "'"), q("select 1")))
# read-write-split (mode bit 6): batches judged whole before the claim (route.c's batch_read_only)
write("relay", "split-read-then-write", bytes([0x40]) + chunks(
    parse("r","select 1") + bind("","r") + execute() + parse("","insert into t values (1)") + bind("","") + execute() + SYNC,
    q("select 2")))
write("relay", "split-no-sync-yet", bytes([0x40]) + chunks(
    parse("","select $1",(23,)) + bind("","",(b"1",)) + describe(b"P","") + execute() + FLUSH, SYNC,
    bind("","r") + execute() + SYNC))
write("relay", "split-named-reused", bytes([0xc0]) + chunks(
    parse("s1","select 1") + SYNC, bind("","s1") + execute() + bind("","s1") + execute() + SYNC,
    describe(b"S","s1") + close(b"S","s1") + SYNC, msg(b"H") + SYNC))

# login: selector & 7 user (t password md5 scram rejected blocked nobody admin), bit3 console, bit6 raw
write("login", "trust-query", bytes([0]) + chunks(q("select 1")))
write("login", "password-ok", bytes([1]) + chunks(msg(b"p", b"pw\0"), q("select 1")))
write("login", "password-wrong", bytes([1]) + chunks(msg(b"p", b"nope\0")))
write("login", "password-unterminated", bytes([1]) + chunks(msg(b"p", b"pw")))
write("login", "md5-answer", bytes([2]) + chunks(msg(b"p", b"md5" + b"0"*32 + b"\0")))
write("login", "scram-first", bytes([3]) + chunks(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", 32) + b"n,,n=,r=rOprNGfwEbeRWgbNEkqO%hvYDp"), msg(b"p", b"c=biws,r=x,p=AAAA")))
write("login", "scram-plus-mismatch", bytes([6]) + chunks(msg(b"p", b"SCRAM-SHA-256-PLUS\0" + struct.pack("!I", 8) + b"n,,n=,r=")))
write("login", "rejected", bytes([4]) + chunks(q("select 1")))
write("login", "blocked", bytes([5]))
write("login", "console-admin", bytes([7|8]) + chunks(q("SHOW VERSION")))
write("login", "console-unknown-user", bytes([6|8]) + chunks(msg(b"p", b"x\0")))
def startup(params, version=0x30000):
    body = struct.pack("!I", version) + b"".join(k.encode()+b"\0"+v.encode()+b"\0" for k,v in params.items()) + b"\0"
    return struct.pack("!I", len(body)+4) + body
write("login", "raw-ssl-then-startup", bytes([0x40]) + chunks(struct.pack("!II", 8, 80877103) + startup({"user":"t","database":"db"}), q("select 1")))
write("login", "raw-protocol-3.2-options", bytes([0x40]) + chunks(startup({"user":"t","database":"db","_pq_.x":"1","options":"-c search_path=a"}, 0x30002), q("select 1")))
write("login", "raw-cancel", bytes([0x40]) + chunks(struct.pack("!IIII", 16, 80877102, 1, 2)))
write("login", "raw-replication-password", bytes([0x40]) + chunks(startup({"user":"password","database":"replication","replication":"true","application_name":"r"}), msg(b"p", b"pw\0"), q("IDENTIFY_SYSTEM")))
write("login", "raw-replication-twice", bytes([0x40]) + chunks(startup({"user":"t","database":"db","replication":"database","options":"-c a.b=1"}) + b"", q("select 1")))
write("login", "raw-replication-console", bytes([0x40]) + chunks(startup({"user":"admin","database":"tusk","replication":"on"})))
write("login", "raw-replication-bad", bytes([0x40]) + chunks(startup({"user":"t","database":"db","replication":"maybe"})))
write("login", "raw-console-protocol-3.1", bytes([0x40|0x80]) + chunks(startup({"user":"admin","database":"pgbouncer"}, 0x30001), q("SHOW POOLS")))

# console: bit0 monitor, bit1 pgbouncer
for cmd in ("SHOW POOLS","SHOW CLIENTS","SHOW SERVERS","SHOW STATS","SHOW DATABASES","SHOW CONFIG","SHOW LISTS","SHOW VERSION","SHOW HELP","PAUSE db","RESUME db","KILL db","RECONNECT","KILL_CLIENT c0000000"):
    write("console_session", cmd.lower().replace(" ","-"), bytes([0]) + chunks(q(cmd)))
write("console_session", "extended", bytes([0x80]) + chunks(parse("s","SHOW POOLS") + bind("","s") + describe(b"P","") + execute() + SYNC + describe(b"S","s") + close(b"S","s") + SYNC))
write("console_session", "binary", bytes([0x80]) + chunks(parse("s","SHOW LISTS") + bind("","s",(),(1,)) + describe(b"P","") + execute() + SYNC,
    bind("","s",(),(0,1)) + execute() + SYNC + bind("","s",(),(1,1,1)) + SYNC + bind("","s",(),(2,)) + SYNC + q("SHOW LISTS")))
write("console_session", "monitor-pause", bytes([1]) + chunks(q("PAUSE"), q("SHOW STATS")))
write("console_session", "function-call", bytes([2]) + chunks(msg(b"F", struct.pack("!IHHH",1,0,0,0)), msg(b"?"), q("SHOW VERSION")))
write("console_session", "pipeline-error", bytes([0]) + chunks(parse("","BOGUS") + bind("","") + execute() + SYNC + q("")))
for m, mname in ((1,"password"),(2,"md5"),(3,"scram")):
    write("login", f"console-{mname}-unknown-user", bytes([6|8|(m<<4)]) + chunks(msg(b"p", b"pw\0")))
    write("login", f"console-{mname}-admin", bytes([7|8|(m<<4)]) + chunks(msg(b"p", b"pw\0"), q("SHOW POOLS")))
write("login", "console-password-monitor-user", bytes([0x40|(1<<4)]) + chunks(startup({"user":"monitor","database":"tusk"}), msg(b"p", b"pw\0"), q("SHOW STATS")))

# kv_session: the kv database's calls (answered 57P03: no router in the harness); bit 7 Terminate
os.makedirs("fuzz/corpus/kv_session", exist_ok=True)
write("kv_session", "simple", bytes([0x80]) + chunks(q("select kv.get('default', 'k')"), q("SELECT kv.put('default', 'k', '{\"n\": 1}', interval '1 hour')"), q(""), q("begin")))
write("kv_session", "extended", bytes([0]) + chunks(
    parse("s1", "select kv.get($1, $2) as v", (25, 25)) + describe(b"S", "s1") + bind("", "s1", (b"default", b"k")) + describe(b"P", "") + execute() + SYNC,
    close(b"S", "s1") + close(b"P", "") + describe(b"S", "s1") + SYNC))
write("kv_session", "batches", bytes([0]) + chunks(
    parse("", "select * from kv.get_many($1, $2)") + bind("", "", (b"default", b"{a,b,\"c d\"}")) + execute() + SYNC,
    parse("", "select kv.put_many('default', ARRAY['a','b'], ARRAY['1','2'])") + bind("", "") + execute() + SYNC,
    q("select * from kv.scan('default', 'a', NULL, 10)")))
write("kv_session", "many-statements", bytes([0]) + chunks(
    b"".join(parse(f"s{i}", f"select kv.get($1, $2) as c{i}") for i in range(20)) + close(b"S", "s3") + parse("s3", "select kv.delete($1, $2)") + SYNC))
write("kv_session", "msetnx-rename-flush", bytes([0]) + chunks(
    q("select kv.msetnx('default', ' { \"a\\\\\\\"\\u00e9\": 1, \"b\": 2}')"), q("select kv.msetnx('default', '{\"')"),
    parse("", "select kv.msetnx($1, $2)") + bind("", "", (b"default", b'{"k\\":1}')) + execute() + SYNC,
    q("select kv.rename('default', 'a', 'b', true)"), q("select kv.flush('default')"),
    q("select kv.put_if_value('default', 'a', NULL, '1')")))
write("kv_session", "driver-set-binary", bytes([0]) + chunks(
    q("SET extra_float_digits = 3"), q("set session application_name to 'a''b'"), q("SET search_path = x"),
    parse("j", "SET application_name = 'PostgreSQL JDBC Driver'") + describe(b"S", "j") + bind("", "j") + describe(b"P", "") + execute() + SYNC,
    parse("", "select * from kv.get_many($1, $2)") + bind("", "", (b"default", b"{a}"), (0, 1)) + describe(b"P", "") + execute() + SYNC,
    parse("", "select kv.put($1, $2, $3)") + bind("", "", (b"default", b"a", b"1"), (1,)) + execute() + SYNC,
    bind("", "", (b"default", b"a", b"1"), (1, 1)) + SYNC, bind("", "", (b"default", b"a", b"1"), (2,)) + SYNC))
write("kv_session", "settings-multi", bytes([0]) + chunks(
    q("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;"),
    q("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY"), q("SHOW transaction_isolation"),
    q("BEGIN; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SHOW transaction_isolation; COMMIT"),
    q("SHOW default_transaction_read_only; RESET default_transaction_read_only; select kv.get('default', 'k'); DISCARD ALL"),
    q("select kv.get('default', 'a'); BEGIN; select kv.put('default', 'a', '1'); ROLLBACK; DEALLOCATE ALL"),
    parse("sh", "SHOW TRANSACTION ISOLATION LEVEL") + describe(b"S", "sh") + bind("", "sh") + execute() + execute() + SYNC,
    parse("u", "select pg_advisory_unlock_all()") + bind("C1", "u") + describe(b"P", "C1") + execute("C1") + SYNC,
    q("CLOSE C1; DEALLOCATE u; DISCARD PLANS"), q("set default_transaction_isolation = 'bogus'")))
write("kv_session", "cursors", bytes([0]) + chunks(
    q("BEGIN"), parse("", "DECLARE \"c\" CURSOR FOR select * from kv.scan($1, $2, NULL, 10)", (25, 25))
    + bind("", "", (b"default", b"a")) + describe(b"P", "") + execute() + SYNC,
    describe(b"P", "c") + SYNC, parse("", "FETCH FORWARD 2 FROM \"c\"") + bind("", "", (), (1,)) + describe(b"P", "") + execute() + SYNC,
    q("MOVE ALL IN c; FETCH c; CLOSE c; CLOSE c"), q("DECLARE h CURSOR WITH HOLD FOR select kv.get('default', 'a')"),
    q("COMMIT"), q("FETCH ALL FROM h; CLOSE ALL; DECLARE s SCROLL CURSOR FOR select kv.get('a', 'b')")))
write("kv_session", "portals", bytes([0]) + chunks(
    q("BEGIN"), parse("m", "select * from kv.get_many($1, $2)", (25, 1009)),
    bind("a", "m", (b"default", b"{k1,k2,k3}")) + bind("b", "m", (b"default", b"{k4}"), (1,)) + describe(b"P", "a")
    + execute("a", 1) + execute("b") + SYNC,
    q("select kv.get('default', 'k'); MOVE 1 IN a"), parse("", "select kv.get($1, $2)") + bind("", "", (b"d", b"k"))
    + execute() + close(b"P", "b") + execute("b") + SYNC, parse("m", "select kv.get($1, $2)") + bind("c", "m", (b"d", b"k"))
    + close(b"S", "m") + execute("c", 2) + SYNC, q("CLOSE ALL; FETCH 1 FROM a; ROLLBACK")))
write("kv_session", "savepoints", bytes([0]) + chunks(
    q("SAVEPOINT a"), q("BEGIN; SAVEPOINT a; SAVEPOINT \"B\"\"b\"; SAVEPOINT a"), q("SET default_transaction_read_only = on"),
    q("DECLARE c CURSOR FOR select kv.get('default', 'a')"), q("ROLLBACK TO a; RELEASE a; RELEASE nope"),
    parse("", "ROLLBACK TO SAVEPOINT \"B\"\"b\"") + bind("", "") + execute() + SYNC,
    q("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; SET TRANSACTION DEFERRABLE"), q("ROLLBACK TO a; RELEASE a"),
    q("SAVEPOINT x; COMMIT; SAVEPOINT y; select kv.get('default', 'a')")))
write("kv_session", "values", bytes([0]) + chunks(
    q("SELECT 1"), q("select 'x' as y; select true; select pg_catalog.version(); select current_schema()"),
    parse("v", "select 7") + describe(b"S", "v") + bind("", "v", (), (1,)) + execute() + SYNC,
    parse("", "show standard_conforming_strings") + bind("", "", (), (1,)) + describe(b"P", "") + execute() + SYNC,
    q("SHOW TimeZone; select current_database(); select 1.5"),
    parse("t", "SELECT t.oid, t.typelem AS elemtype, t.typtype AS kind FROM pg_catalog.pg_type AS t WHERE t.oid = $1")
    + describe(b"S", "t") + bind("", "t", (b"3802",), (1, 1, 1)) + execute() + bind("", "t", (b"114",)) + execute() + SYNC,
    q("SELECT t.oid, t.typelem AS elemtype, t.typtype AS kind FROM pg_catalog.pg_type AS t WHERE t.oid = $1"),
    parse("r", "SELECT typname AS name, oid, typarray AS array_oid, oid::regtype::text AS regtype, typdelim AS delimiter "
          "FROM pg_type t WHERE t.oid = $1::regtype ORDER BY t.oid") + bind("", "r", (b"text[]",), (1,)) + execute()
    + bind("", "r", (b' "char" ',)) + execute() + bind("", "r", (b"hstore",)) + execute() + SYNC))
write("kv_session", "errors", bytes([0]) + chunks(
    parse("", "select kv.nope($1)") + bind("", "") + execute() + SYNC, parse("x", "select 1; select 2") + SYNC,
    bind("", "missing") + SYNC, msg(b"F", struct.pack("!IHHH", 1, 0, 0, 0)), q("select kv.get($1, $2)")))

# kv_redis: the Redis listener's commands (those reaching a kv call answered "kv routing is
# not running": no router in the harness); bit 7 ends with QUIT
def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
os.makedirs("fuzz/corpus/kv_redis", exist_ok=True)
write("kv_redis", "basic", bytes([0x80]) + chunks(resp("PING"), resp("ECHO", "hi"), resp("GET", "k"), resp("SET", "k", "v", "EX", "10", "NX")))
write("kv_redis", "inline", bytes([0]) + chunks(b"PING\r\nECHO \"a b\" 'c'\r\n", b"GET k\r\n\r\nSET k v PX 5 XX\r\n"))
write("kv_redis", "auth-select-hello", bytes([0x80]) + chunks(resp("AUTH", "t", "pw"), resp("AUTH", "t", "no"), resp("AUTH", "pw"),
    resp("SELECT", "1"), resp("SELECT", "9"), resp("HELLO", "3"), resp("HELLO", "3", "AUTH", "t", "pw", "SETNAME", "x"), resp("HELLO", "2")))
write("kv_redis", "many", bytes([0]) + chunks(resp("MSET", "a", "1", "b", "2", "c"), resp("MGET", "a", "b"), resp("DEL", "a", "b"),
    resp("EXISTS", "a"), resp("EXPIRE", "a", "10"), resp("PEXPIRE", "a", "-1"), resp("TTL", "a"), resp("PTTL", "a")))
write("kv_redis", "counters-scan", bytes([0]) + chunks(resp("INCR", "n"), resp("DECRBY", "n", "9223372036854775808"), resp("INCRBY", "n", "x"),
    resp("SCAN", "0", "MATCH", "a*", "COUNT", "10"), resp("SCAN", "17", "MATCH", "*a"), resp("DBSIZE"), resp("TYPE", "n"), resp("STRLEN", "n")))
write("kv_redis", "admin", bytes([0]) + chunks(resp("INFO"), resp("INFO", "server"), resp("CONFIG", "GET", "*"), resp("CONFIG", "SET", "save", ""),
    resp("CLIENT", "SETNAME", "x"), resp("COMMAND"), resp("FLUSHALL"), resp("QUIT")))
write("kv_redis", "client", bytes([0x80]) + chunks(resp("CLIENT"), resp("CLIENT", "SETNAME", "n"), resp("CLIENT", "GETNAME"),
    resp("CLIENT", "SETNAME", "a b"), resp("CLIENT", "SETNAME", ""), resp("CLIENT", "ID"), resp("CLIENT", "INFO"), resp("CLIENT", "INFO", "x"),
    resp("CLIENT", "SETINFO", "LIB-NAME", "x"), resp("CLIENT", "NO-EVICT", "on"), resp("CLIENT", "REPLY", "OFF"), resp("CLIENT", "TRACKING", "on"),
    resp("CLIENT", "TRACKINGINFO"), resp("CLIENT", "HELP"), resp("CLIENT", "KILL"), resp("HELLO", "3", "SETNAME", "h"), resp("CLIENT", "GETNAME")))
write("kv_redis", "split-and-bad", bytes([0]) + chunks(b"*2\r\n$3\r\nGE", b"T\r\n$1\r\nk\r\n", b"*-1\r\n", b"*1\r\n$-5\r\n", b"$3\r\nabc\r\n", b"*99999999999\r\n"))
write("kv_redis", "multi", bytes([0x80]) + chunks(resp("MULTI"), resp("SET", "a", "1"), resp("GET"), resp("EXEC"),
    resp("MULTI"), resp("MULTI"), resp("PING"), resp("INCR", "n"), resp("MGET", "a", "b"), resp("EXEC"), resp("EXEC"),
    resp("DISCARD"), resp("WATCH", "a"), resp("UNWATCH"), resp("MULTI"), resp("SCAN", "0"), resp("WATCH", "a"), resp("DISCARD"),
    b"MULTI\r\nSET a b\r\nNOPE\r\nEXEC\r\n", resp("WATCH", "a", "b"), resp("WATCH"), resp("MULTI"), resp("EXEC")))
