// node-postgres and pg-cursor through tusk's kv database, as an application uses them
// (tests/integration/test_kv_txn.py): a transaction of BEGIN, puts and COMMIT or ROLLBACK
// (client.query), then a pg-cursor over get_many inside a transaction read 2 rows at a time
// (a named portal, Execute with a row limit); then a Query of several statements (client.query
// of a text without parameters: one result per statement) that commits, and one that fails in
// its middle and so keeps nothing. Env: PGHOST PGPORT PGUSER PGDATABASE (the target), KEYS
// (comma-separated keys of one shard). Prints one JSON line:
// {"committed": ..., "rolled_back": ..., "batches": [[[key, value], ...] per read], "other": ...,
//  "multi": [command of each result], "multi_after": ..., "multi_error": ..., "multi_kept": ...,
//  "timeouts": [SHOW statement_timeout, SHOW lock_timeout, a get] of a client given them}
// or {"error": message}.
'use strict'
const pg = require('pg')
const Cursor = require('pg-cursor')

const base = require('./target')
const keys = (process.env.KEYS || '').split(',')

async function main() {
  const c = new pg.Client(base)
  const o = new pg.Client(base)
  await c.connect()
  await o.connect()
  const get = async (k) => (await o.query('select kv.get($1, $2)', ['default', k])).rows[0].get
  try {
    await c.query('BEGIN')
    for (const [i, k] of keys.entries())
      await c.query('select kv.put($1, $2, $3::jsonb)', ['default', k, JSON.stringify({ i })])
    const other = await get(keys[0]) // not committed yet: null
    await c.query('COMMIT')
    const committed = await get(keys[0])
    await c.query('BEGIN')
    await c.query('select kv.put($1, $2, $3::jsonb)', ['default', keys[0], '{"i": -1}'])
    await c.query('ROLLBACK')
    const rolledBack = await get(keys[0])
    await c.query('BEGIN')
    const cursor = c.query(new Cursor('select * from kv.get_many($1, $2)', ['default', keys]))
    const batches = []
    for (;;) {
      const rows = await cursor.read(2)
      if (rows.length === 0) break
      batches.push(rows.map((r) => [r.key, r.value]))
    }
    await cursor.close()
    await c.query('COMMIT')
    // keys are the test's own (no quote in them)
    const results = await c.query(`BEGIN; select kv.put('default', '${keys[1]}', '{"m": 1}'); ` +
                                  `select kv.get('default', '${keys[1]}'); COMMIT`)
    const multi = results.map((r) => r.command)
    const multiAfter = await get(keys[1])
    let multiError = null
    try {
      await c.query(`select kv.put('default', '${keys[2]}', '{"m": 2}'); select kv.put('default', '${keys[2]}', 'x')`)
    } catch (e) {
      multiError = e.code
    }
    const multiKept = await get(keys[2])
    // node-postgres's statement_timeout and lock_timeout options: startup parameters
    const t = new pg.Client({ ...base, statement_timeout: 1500, lock_timeout: 250 })
    await t.connect()
    let timeouts
    try {
      timeouts = [(await t.query('SHOW statement_timeout')).rows[0].statement_timeout,
                  (await t.query('SHOW lock_timeout')).rows[0].lock_timeout,
                  (await t.query('select kv.get($1, $2)', ['default', keys[0]])).rows[0].get]
    } finally {
      await t.end()
    }
    console.log(JSON.stringify({ committed, rolled_back: rolledBack, batches, other, multi, multi_after: multiAfter,
                                 multi_error: multiError, multi_kept: multiKept, timeouts }))
  } catch (e) {
    console.log(JSON.stringify({ error: String(e && e.message) }))
  } finally {
    await c.end()
    await o.end()
  }
}

main()
