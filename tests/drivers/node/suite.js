// node-postgres the way applications use it, against one target (PostgreSQL direct, tusk, or
// PgBouncer). Run by tests/integration/test_drivers.py (direct and through tusk, outputs compared)
// and bench/drivers.sh.
//   node suite.js [CASE ...]       (no case: all of them; --list: their names)
// Env: PGHOST PGPORT PGUSER PGDATABASE (the target), TAG (prefix of the tables this run makes, so
// runs against several targets of one PostgreSQL do not meet), POOL_MAX (pg.Pool size, default 12:
// larger than the pooler's size), TLS_PORT and TLS_CA (a TLS listener and its CA; without them
// the tls case prints "not configured"), WATCH_PORTS (the servers behind the target, on
// 127.0.0.1, comma-separated: where the cancel case looks for its running query when the target
// may run it on any of them).
// Prints one JSON line per case: {"case": NAME, "out": WHAT IT SAW}. "out" holds only values a
// correct server gives the same way every run (no pids, no timings), so two targets' lines can be
// compared as they are. Exit 0 whatever the cases saw; 3 when the watchdog fired: a connection
// made no progress for 10 s (it prints which one and what it was doing).
'use strict'
const fs = require('fs')
const pg = require('pg')
const Cursor = require('pg-cursor')
const QueryStream = require('pg-query-stream')

const TAG = process.env.TAG || 'nd'
const base = require('./target')
// A database name the pooler serves from a pool of ONE server (tusk_test there): what one client
// leaves behind on its server, the next one meets.
const ONE_DB = process.env.ONE_DATABASE || base.database
const POOL_MAX = parseInt(process.env.POOL_MAX || '12', 10)
const STALL_MS = 10000

// ---- watchdog: every connection says what it is doing; none may sit still for 10 s ----------
const doing = new Map() // label -> {what, since}
function step(label, what) { doing.set(label, { what, since: Date.now() }) }
function done(label) { doing.delete(label) }
setInterval(() => {
  const now = Date.now()
  for (const [label, d] of doing) {
    if (now - d.since > STALL_MS) {
      console.log(JSON.stringify({ stall: label, doing: d.what, seconds: Math.round((now - d.since) / 1000) }))
      process.exit(3)
    }
  }
}, 500).unref()

async function client(label, extra = {}) {
  const c = new pg.Client({ ...base, ...extra })
  c.on('error', (e) => { c._asyncError = e.code || e.message })
  step(label, 'connect')
  await c.connect()
  done(label)
  return c
}
// q(label, client, query...): the query, watched.
async function q(label, c, ...args) {
  step(label, typeof args[0] === 'string' ? args[0] : (args[0].text || args[0].name || 'submittable'))
  try {
    return await c.query(...args)
  } finally {
    done(label)
  }
}
function err(e) { return { error: e.code || e.message } }
async function clientOne(label) { return client(label, { database: ONE_DB }) }
async function admin(sql) {
  const c = await client('admin')
  try { await q('admin', c, sql) } finally { await c.end() }
}

const cases = {}

// Named statements (Parse once per connection, then Bind/Execute), many values, every row checked.
cases.named_prepared = async () => {
  const c = await client('named')
  const bad = []
  for (let i = 0; i < 200; i++) {
    const r = await q('named', c, { name: 'nd_sel', text: 'SELECT $1::int * 2 AS d, $2::text AS t', values: [i, 'v' + i] })
    if (r.rows.length !== 1 || r.rows[0].d !== 2 * i || r.rows[0].t !== 'v' + i) bad.push(i)
  }
  // a second name for another text, interleaved with the first
  for (let i = 0; i < 50; i++) {
    const a = await q('named', c, { name: 'nd_a', text: 'SELECT $1::int + 1 AS v', values: [i] })
    const b = await q('named', c, { name: 'nd_b', text: "SELECT $1::text || '!' AS v", values: ['x' + i] })
    if (a.rows[0].v !== i + 1 || b.rows[0].v !== 'x' + i + '!') bad.push('ab' + i)
  }
  await c.end()
  return { bad }
}

// Statements named after their purpose, past PostgreSQL's 63 bytes (it keeps the first 63 of a
// name and drops the rest): two of them, interleaved, each prepared once and run many times.
cases.long_names = async () => {
  const c = await client('longnames')
  const bad = []
  const n1 = 'fetch_the_account_balance_for_a_customer_including_pending_transfers_v1'
  const n2 = 'update_the_last_seen_timestamp_of_a_session_after_each_authenticated_request'
  for (let i = 0; i < 50; i++) {
    const a = await q('longnames', c, { name: n1, text: 'SELECT $1::int * 3 AS v', values: [i] })
    const b = await q('longnames', c, { name: n2, text: "SELECT $1::text || '?' AS v", values: ['y' + i] })
    if (a.rows[0].v !== 3 * i || b.rows[0].v !== 'y' + i + '?') bad.push(i)
  }
  await c.end()
  return { bad, n: 50 }
}

// A named query that fails at its Parse (its table is missing), run again once the table
// exists, and one whose name another text took: what node-postgres and the server make of it.
cases.named_after_failure = async () => {
  const t = `${TAG}_naf`
  await admin(`DROP TABLE IF EXISTS ${t}`)
  const c = await client('naf')
  const out = {}
  const run = async (k, query) => {
    try { out[k] = (await q('naf', c, query)).rows } catch (e) { out[k] = err(e) }
  }
  await run('missing', { name: 'nd_naf', text: `SELECT count(*)::int AS n FROM ${t}` })
  await admin(`CREATE TABLE ${t} (i int); INSERT INTO ${t} VALUES (1), (2)`)
  await run('created', { name: 'nd_naf', text: `SELECT count(*)::int AS n FROM ${t}` })
  await run('again', { name: 'nd_naf', text: `SELECT count(*)::int AS n FROM ${t}` })
  await run('same_text_other_name', { name: 'nd_naf2', text: `SELECT count(*)::int AS n FROM ${t}` })
  await run('after', { text: 'SELECT 1 AS one' })
  await c.end()
  await admin(`DROP TABLE ${t}`)
  return out
}

// Unnamed statements (parameterised queries): Parse/Bind/Execute/Sync each time.
cases.unnamed_prepared = async () => {
  const c = await client('unnamed')
  const bad = []
  for (let i = 0; i < 200; i++) {
    const r = await q('unnamed', c, 'SELECT $1::int AS i, $2::numeric * 2 AS n, $3::bool AS b', [i, '1.25', i % 2 === 0])
    const row = r.rows[0]
    if (row.i !== i || row.n !== '2.50' || row.b !== (i % 2 === 0)) bad.push(i)
  }
  await c.end()
  return { bad }
}

// pg.Pool larger than the pooler's size: many concurrent checkouts, every result checked.
cases.pool_larger_than_size = async () => {
  const pool = new pg.Pool({ ...base, max: POOL_MAX, idleTimeoutMillis: 1000 })
  pool.on('error', () => {})
  const bad = []
  let n = 0
  await Promise.all(Array.from({ length: 300 }, async (_, i) => {
    const label = 'pool' + i
    step(label, 'pool.query ' + i)
    try {
      const r = await pool.query({ name: 'nd_pool', text: 'SELECT $1::int AS i, pg_sleep(0.002) IS NULL AS s', values: [i] })
      if (r.rows[0].i !== i) bad.push(i); else n++
    } catch (e) { bad.push(i + ':' + (e.code || e.message)) } finally { done(label) }
  }))
  // transactions on pool clients, held while others run
  await Promise.all(Array.from({ length: POOL_MAX }, async (_, i) => {
    const label = 'pooltx' + i
    const c = await pool.connect()
    try {
      await q(label, c, 'BEGIN')
      await q(label, c, `SET LOCAL application_name = 'nd_tx_${i}'`)
      await q(label, c, 'SELECT pg_sleep(0.05)')
      const r = await q(label, c, 'SELECT current_setting($1) AS a', ['application_name'])
      if (r.rows[0].a !== `nd_tx_${i}`) bad.push('tx' + i)
      await q(label, c, 'COMMIT')
    } finally { c.release() }
  }))
  await pool.end()
  return { ok: n, bad }
}

// pg-cursor inside a transaction: batches of a named portal.
cases.cursor_in_transaction = async () => {
  const c = await client('cursor')
  await q('cursor', c, 'BEGIN')
  const cur = c.query(new Cursor('SELECT g, md5(g::text) AS m FROM generate_series(1, $1::int) g ORDER BY g', [1000]))
  let n = 0, sum = 0, batches = 0
  const bad = []
  for (;;) {
    step('cursor', 'cursor.read batch ' + batches)
    const rows = await cur.read(97)
    done('cursor')
    if (rows.length === 0) break
    batches++
    for (const r of rows) { n++; sum += r.g; if (r.g !== n || r.m.length !== 32) bad.push(n) }
  }
  await cur.close()
  // an ordinary query after the cursor, in the same transaction (node-postgres queues a query
  // behind an open cursor, so it cannot run between reads)
  const r = await q('cursor', c, 'SELECT 42 AS v')
  if (r.rows[0].v !== 42) bad.push('after cursor')
  await q('cursor', c, 'COMMIT')
  await c.end()
  return { n, sum, batches, bad }
}

// pg-cursor outside a transaction: Execute with a row limit, Flush, more Executes, Sync at close.
// Between them the server is inside an implicit transaction.
cases.cursor_autocommit = async () => {
  const c = await client('cursor2')
  const cur = c.query(new Cursor('SELECT g FROM generate_series(1, 500) g'))
  let n = 0, sum = 0
  for (;;) {
    step('cursor2', 'cursor.read')
    const rows = await cur.read(50)
    done('cursor2')
    if (rows.length === 0) break
    for (const r of rows) { n++; sum += r.g }
  }
  await cur.close()
  const r = await q('cursor2', c, 'SELECT 7 AS v')
  await c.end()
  return { n, sum, after: r.rows[0].v }
}

// pg-query-stream: 5,000 rows streamed, several streams at once on separate clients.
cases.query_stream = async () => {
  const one = async (k) => {
    const label = 'stream' + k
    const c = await client(label)
    let n = 0, sum = 0
    step(label, 'stream')
    await new Promise((resolve, reject) => {
      const s = c.query(new QueryStream('SELECT g, repeat($1, 10) AS r FROM generate_series(1, 5000) g', ['ab'], { batchSize: 100 }))
      s.on('data', (row) => { n++; sum += row.g; step(label, 'stream row ' + n); if (row.r.length !== 20) reject(new Error('row ' + n)) })
      s.on('end', resolve)
      s.on('error', reject)
    })
    done(label)
    await c.end()
    return [n, sum]
  }
  return await Promise.all([0, 1, 2, 3].map(one))
}

// (On the pooler's one-server pool, so the next client gets the same server.)
// A client that goes away in the middle of a cursor over an INSERT ... RETURNING, with no Sync
// ever sent: PostgreSQL rolls the implicit transaction back; nothing may be committed.
cases.disconnect_mid_cursor = async () => {
  const t = `${TAG}_midcur`
  await admin(`DROP TABLE IF EXISTS ${t}; CREATE TABLE ${t}(v int)`)
  const c = await clientOne('midcur')
  const cur = c.query(new Cursor(`INSERT INTO ${t} SELECT g FROM generate_series(1, 10) g RETURNING v`))
  step('midcur', 'cursor.read')
  const rows = await cur.read(2)
  done('midcur')
  c.connection.stream.destroy() // the process dies: no Sync, no Terminate
  await new Promise((r) => setTimeout(r, 1500))
  const a = await clientOne('midcur-check')
  const r = await q('midcur-check', a, `SELECT count(*)::int AS n FROM ${t}`)
  // and the next client's autocommit writes must commit, not join a stranger's transaction
  await q('midcur-check', a, `INSERT INTO ${t} VALUES (-1)`)
  await a.end()
  const b = await clientOne('midcur-check2')
  const r2 = await q('midcur-check2', b, `SELECT count(*)::int AS n FROM ${t} WHERE v = -1`)
  await b.end()
  await admin(`DROP TABLE ${t}`)
  return { read: rows.length, committed_rows: r.rows[0].n, next_client_write: r2.rows[0].n }
}

// An error in the middle of a result (after rows were sent), in and out of a transaction; the
// connection goes on working.
cases.error_mid_query = async () => {
  const c = await client('errmid')
  const out = {}
  try { await q('errmid', c, 'SELECT 10 / (5 - g) AS v FROM generate_series(1, 10) g') } catch (e) { out.autocommit = err(e) }
  out.after = (await q('errmid', c, 'SELECT 1 AS v')).rows[0].v
  await q('errmid', c, 'BEGIN')
  try { await q('errmid', c, { name: 'nd_div', text: 'SELECT 10 / (5 - g) AS v FROM generate_series(1, $1::int) g', values: [10] }) } catch (e) { out.in_tx = err(e) }
  try { await q('errmid', c, 'SELECT 2') } catch (e) { out.in_failed_tx = err(e) }
  await q('errmid', c, 'ROLLBACK')
  out.named_again = (await q('errmid', c, { name: 'nd_div', text: 'SELECT 10 / (5 - g) AS v FROM generate_series(1, $1::int) g', values: [3] })).rows.map((r) => r.v)
  try { await q('errmid', c, 'SELECT * FROM no_such_table_nd') } catch (e) { out.parse_error = err(e) }
  out.status = c.getTransactionStatus()
  await c.end()
  return out
}

// Cancel a running query the way node-postgres does (a CancelRequest on a new connection), once
// the query is seen running (a cancel that arrives before it would cancel nothing).
// Until the query carrying marker runs. Looked for through the target, or, with WATCH_PORTS
// (a read-write-split pool: the query runs on whichever standby took it, and a watcher's own
// reads go to another), directly on each of those servers.
async function whenRunning(marker) {
  const ports = (process.env.WATCH_PORTS || '').split(',').filter(Boolean)
  const ws = ports.length
    ? await Promise.all(ports.map((p) => client('cancel-watch', { host: '127.0.0.1', port: parseInt(p, 10), ssl: false })))
    : [await client('cancel-watch')]
  try {
    for (let i = 0; i < 200; i++) {
      for (const w of ws) {
        const r = await q('cancel-watch', w, "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1", ['%' + marker + '%'])
        if (r.rows[0].n >= 1) return
      }
      await new Promise((r) => setTimeout(r, 50))
    }
  } finally { await Promise.all(ws.map((w) => w.end())) }
}
async function cancelled(c, marker) {
  const running = c.query(`SELECT pg_sleep(30) /* ${marker} */`)
  const query = c._getActiveQuery()
  await whenRunning(marker)
  step('cancel', 'pg_sleep(30) waiting for the cancel')
  new pg.Client(base).cancel(c, query)
  try { await running; return 'no error' } catch (e) { return err(e) } finally {
    done('cancel')
    // PostgreSQL's postmaster signals a cancelled backend twice (its process, then its process
    // group); on a loaded machine the second can come after the error reached us, and cancels
    // whatever runs then. A backend idle between statements ignores it: give it that moment.
    await new Promise((r) => setTimeout(r, 200))
  }
}
cases.cancel = async () => {
  const c = await client('cancel')
  const out = {}
  out.cancelled = await cancelled(c, `${TAG}_cancel_1`)
  out.after = (await q('cancel', c, 'SELECT 5 AS v')).rows[0].v
  // cancel inside a transaction: the transaction is failed, then rolled back
  await q('cancel', c, 'BEGIN')
  out.in_tx = await cancelled(c, `${TAG}_cancel_2`)
  await q('cancel', c, 'ROLLBACK')
  out.after_tx = (await q('cancel', c, 'SELECT 6 AS v')).rows[0].v
  await c.end()
  return out
}

// connect(); end() without waiting: node-postgres sends Terminate before the startup packet.
cases.connect_end = async () => {
  const events = []
  for (let i = 0; i < 5; i++) {
    const c = new pg.Client(base)
    c.on('error', (e) => events.push('error event: ' + (e.code || e.message)))
    const p = c.connect().then(() => 'connected', (e) => 'connect rejected: ' + (e.code || e.message))
    await c.end()
    // against PostgreSQL the connect promise never settles (the socket closes silently)
    events.push(await Promise.race([p, new Promise((r) => setTimeout(() => r('connect never settled'), 400))]))
  }
  return { events: [...new Set(events)].sort() }
}

// The listener with TLS: the session is encrypted and works.
cases.tls = async () => {
  if (!process.env.TLS_PORT) return 'not configured'
  const c = await client('tls', { port: parseInt(process.env.TLS_PORT, 10), ssl: { ca: fs.readFileSync(process.env.TLS_CA), servername: 'localhost' } })
  const enc = !!c.connection.stream.encrypted
  let sum = 0
  for (let i = 0; i < 20; i++) sum += (await q('tls', c, { name: 'nd_tls', text: 'SELECT $1::int AS v', values: [i] })).rows[0].v
  const big = (await q('tls', c, "SELECT string_agg(md5(g::text), '') AS s FROM generate_series(1, 5000) g")).rows[0].s.length
  await c.end()
  return { encrypted: enc, sum, big }
}

// A named statement across a schema change made by another connection.
cases.named_schema_change = async () => {
  const t = `${TAG}_nsc`
  await admin(`DROP TABLE IF EXISTS ${t}; CREATE TABLE ${t}(id int, a int); INSERT INTO ${t} VALUES (1, 10)`)
  const c = await client('nsc')
  const qq = { name: 'nd_nsc', text: `SELECT * FROM ${t} WHERE id = $1`, values: [1] }
  const run = async () => { try { return (await q('nsc', c, qq)).rows } catch (e) { return err(e) } }
  const out = { before: [await run(), await run()] }
  await admin(`ALTER TABLE ${t} ADD COLUMN c text DEFAULT 'new'`)
  out.add_column = [await run(), await run()]
  await admin(`ALTER TABLE ${t} ALTER COLUMN a TYPE bigint`)
  out.int_to_bigint = [await run(), await run()]
  await c.end()
  await admin(`DROP TABLE ${t}`)
  return out
}

// ---- what applications do with node-postgres beyond queries ----------------------------------

// Several statements in one simple Query: one result each; an error in the middle stops the rest.
cases.multi_statement = async () => {
  const t = `${TAG}_ms`
  await admin(`DROP TABLE IF EXISTS ${t}; CREATE TABLE ${t}(id int primary key)`)
  const c = await client('ms')
  const out = {}
  const rs = await q('ms', c, `INSERT INTO ${t} VALUES (1); SELECT count(*)::int AS n FROM ${t}; UPDATE ${t} SET id = 2; SELECT id FROM ${t}`)
  out.results = rs.map((r) => [r.command, r.rowCount, r.rows])
  try { await q('ms', c, `INSERT INTO ${t} VALUES (3); SELECT 1/0; INSERT INTO ${t} VALUES (4)`); out.mid_error = 'no error' } catch (e) { out.mid_error = err(e) }
  out.after = (await q('ms', c, `SELECT array_agg(id ORDER BY id) AS ids FROM ${t}`)).rows[0].ids
  try { await q('ms', c, `BEGIN; INSERT INTO ${t} VALUES (5); COMMIT; SELECT 1/0`); out.committed_then_error = 'no error' } catch (e) { out.committed_then_error = err(e) }
  out.final = (await q('ms', c, `SELECT array_agg(id ORDER BY id) AS ids FROM ${t}`)).rows[0].ids
  out.empty = (await q('ms', c, '')).rows || null
  await c.end()
  await admin(`DROP TABLE ${t}`)
  return out
}

// Notices (RAISE NOTICE), LISTEN/NOTIFY through client.on('notification'), rowMode array.
cases.notices_and_notifications = async () => {
  const c = await client('nn')
  const n = await client('nn-notifier')
  const notices = []
  const notes = []
  c.on('notice', (m) => notices.push([m.severity, m.message]))
  c.on('notification', (m) => notes.push([m.channel.replace(TAG, 'T'), m.payload]))
  await q('nn', c, "DO $$ BEGIN RAISE NOTICE 'n %', 1; RAISE WARNING 'w'; END $$")
  await q('nn', c, `LISTEN ${TAG}_ch`)
  await q('nn-notifier', n, `NOTIFY ${TAG}_ch, 'one'`)
  await q('nn-notifier', n, 'BEGIN')
  await q('nn-notifier', n, `NOTIFY ${TAG}_ch, 'rolled back'`)
  await q('nn-notifier', n, 'ROLLBACK')
  await q('nn-notifier', n, { text: 'SELECT pg_notify($1, $2)', values: [`${TAG}_ch`, 'two'] })
  for (let i = 0; i < 50 && notes.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 100))
  await q('nn', c, `UNLISTEN ${TAG}_ch`)
  const arr = (await q('nn', c, { text: 'SELECT 1 AS a, $1::text AS b', values: ['x'], rowMode: 'array' })).rows
  await c.end()
  await n.end()
  return { notices, notes, arr }
}

// Types as node-postgres parses them (and a custom parser), large values both ways, binary mode.
cases.types_and_sizes = async () => {
  const out = {}
  const sel = "SELECT 9007199254740993::bigint AS big, 1.5::float8 AS f, '12345678901234567890.5'::numeric AS n, " +
    "'{1,2,NULL}'::int[] AS arr, '{\"a\": {\"b\": [1, 2]}}'::jsonb AS j, timestamptz '2024-05-06 07:08:09.123+03' AS ts, " +
    "date '2024-02-29' AS d, interval '1 day 02:03:04' AS iv, '\\x00ff'::bytea AS b, true AS t, NULL::text AS nul"
  const c = await client('ty')
  const r = (await q('ty', c, sel)).rows[0]
  out.text = { ...r, ts: r.ts.toISOString(), d: r.d.toISOString ? r.d.toISOString() : String(r.d), b: r.b.toString('hex'), iv: JSON.stringify(r.iv) }
  const big = 'x'.repeat(5 * 1024 * 1024)
  const echo = (await q('ty', c, { text: 'SELECT length($1::text) AS n, md5($1::text) AS m', values: [big] })).rows[0]
  out.big_param = echo
  const many = (await q('ty', c, "SELECT g, repeat('y', 100) AS pad FROM generate_series(1, 100000) g")).rows
  out.many = [many.length, many.reduce((a, x) => a + x.g, 0)]
  await c.end()
  const bc = await client('ty-bin', { binary: true })
  const br = (await q('ty-bin', bc, { text: 'SELECT $1::int AS i, $2::text AS s, 2.5::float8 AS f', values: [41, 'bin'] })).rows[0]
  out.binary = { i: br.i, s: br.s, f: br.f }
  await bc.end()
  return out
}

// Startup settings from the client config: options (-c), statement_timeout, application_name,
// four clients at once over fewer servers.
cases.startup_settings = async () => {
  const out = {}
  const cs = []
  for (let i = 0; i < 4; i++) {
    cs.push(await client('ss' + i, {
      options: `-c search_path=nd_missing,public -c DateStyle=${i % 2 ? 'German' : 'SQL,YMD'} -c myapp.tenant=t${i}`,
      statement_timeout: 3000 + i,
      application_name: `${TAG}-app${i}`,
    }))
  }
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 4; i++) {
      const r = (await q('ss' + i, cs[i], "SELECT current_setting('search_path') AS sp, current_setting('DateStyle') AS ds, " +
        "current_setting('myapp.tenant') AS tenant, current_setting('statement_timeout') AS st, " +
        "current_setting('application_name') AS app, (date '2024-03-05')::text AS shown")).rows[0]
      out[`r${round}c${i}`] = { ...r, app: r.app.replace(TAG, 'T') }
    }
  }
  for (const c of cs) await c.end()
  return out
}

// Named SET and RESET statements (Parse once per connection, then Bind/Execute at each run) and
// savepoints rolled back to, on four connections with their own startup settings over fewer
// servers: what each session holds after each step.
cases.named_set_and_savepoints = async () => {
  const out = {}
  const cs = []
  for (let i = 0; i < 4; i++) {
    cs.push(await client('ns' + i, {
      options: `-c work_mem=${2 + i}MB -c search_path=nd_s${i},public`,
      application_name: `${TAG}-ns${i}`,
    }))
  }
  const look = async (l, c) => {
    const r = (await q(l, c, "SELECT current_setting('work_mem') AS wm, current_setting('search_path') AS sp, " +
      "current_setting('application_name') AS app")).rows[0]
    return { ...r, app: r.app.replace(TAG, 'T') }
  }
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 4; i++) {
      const c = cs[i]
      const l = 'ns' + i
      const seen = []
      await q(l, c, { name: 'set_wm', text: "SET work_mem = '9MB'" })
      await q(l, c, "SET search_path = public; SET application_name = 'moved'")
      seen.push(await look(l, c))
      await q(l, c, { name: 'reset_sp', text: 'RESET search_path' })
      seen.push(await look(l, c))
      await q(l, c, 'BEGIN')
      await q(l, c, "SET work_mem = '7MB'")
      await q(l, c, 'SAVEPOINT a')
      await q(l, c, { name: 'set_wm', text: "SET work_mem = '9MB'" })
      await q(l, c, "SET search_path = public")
      await q(l, c, 'ROLLBACK TO SAVEPOINT a')
      await q(l, c, { name: 'reset_app', text: 'RESET application_name' })
      await q(l, c, 'COMMIT')
      seen.push(await look(l, c))
      await q(l, c, { name: 'set_wm', text: "SET work_mem = '9MB'" })
      await q(l, c, { name: 'reset_all', text: 'RESET ALL' })
      seen.push(await look(l, c))
      out[`r${round}c${i}`] = seen
    }
  }
  for (const c of cs) await c.end()
  return out
}

// Transactions with savepoints, an error inside one, and a client-side query_timeout (the
// driver gives up; the server finishes the query, the connection is then closed by the app).
cases.savepoints = async () => {
  const t = `${TAG}_sp`
  await admin(`DROP TABLE IF EXISTS ${t}; CREATE TABLE ${t}(id int primary key)`)
  const c = await client('sp')
  const out = {}
  await q('sp', c, 'BEGIN')
  await q('sp', c, `INSERT INTO ${t} VALUES (1)`)
  await q('sp', c, 'SAVEPOINT a')
  try { await q('sp', c, { text: `INSERT INTO ${t} VALUES ($1)`, values: [1] }) } catch (e) { out.dup = err(e) }
  try { await q('sp', c, 'SELECT 1'); out.aborted = 'no error' } catch (e) { out.aborted = err(e) }
  await q('sp', c, 'ROLLBACK TO SAVEPOINT a')
  await q('sp', c, `INSERT INTO ${t} VALUES (2)`)
  await q('sp', c, 'SAVEPOINT b')
  await q('sp', c, `INSERT INTO ${t} VALUES (3)`)
  await q('sp', c, 'RELEASE SAVEPOINT b')
  await q('sp', c, 'COMMIT')
  out.rows = (await q('sp', c, `SELECT array_agg(id ORDER BY id) AS ids FROM ${t}`)).rows[0].ids
  await c.end()
  await admin(`DROP TABLE ${t}`)
  return out
}

async function main() {
  const want = process.argv.slice(2)
  if (want[0] === '--list') { console.log(Object.keys(cases).join(' ')); process.exit(0) }
  for (const name of want.length ? want : Object.keys(cases)) {
    let out
    try {
      out = await cases[name]()
    } catch (e) {
      out = { exception: e.code || e.message }
    }
    console.log(JSON.stringify({ case: name, out }))
  }
  process.exit(0)
}
main()
