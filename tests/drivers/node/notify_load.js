// node-postgres LISTEN/NOTIFY the way applications use it (client.on('notification')), many
// clients at once. Run by tests/integration/test_listen_notify_load.py.
// Env: PGHOST PGPORT PGUSER PGDATABASE (the target), CLIENTS, CHANNELS (client i LISTENs to
// channel "ch" + i % CHANNELS), EXPECT (notifications each client waits for), TIMEOUT_MS.
// Prints {"ready": true} once every client listens, then, when every client has EXPECT
// notifications (or at the timeout) and 300 ms more have passed, {"got": [[[channel, payload],
// ...] per client], "errors": [...]}.
'use strict'
const pg = require('pg')

const base = require('./target')
const N = parseInt(process.env.CLIENTS || '200', 10)
const C = parseInt(process.env.CHANNELS || '20', 10)
const EXPECT = parseInt(process.env.EXPECT || '0', 10)
const TIMEOUT_MS = parseInt(process.env.TIMEOUT_MS || '30000', 10)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function main() {
  const clients = []
  for (let i = 0; i < N; i++) {
    const c = new pg.Client(base)
    c.got = []
    c.err = null
    c.on('notification', (m) => c.got.push([m.channel, m.payload]))
    c.on('error', (e) => { c.err = e.code || e.message })
    await c.connect()
    await c.query(`LISTEN ch${i % C}`)
    clients.push(c)
  }
  console.log(JSON.stringify({ ready: true }))
  const deadline = Date.now() + TIMEOUT_MS
  while (Date.now() < deadline && clients.some((c) => c.got.length < EXPECT)) await sleep(50)
  await sleep(300)
  console.log(JSON.stringify({ got: clients.map((c) => c.got), errors: clients.map((c) => c.err) }))
  await Promise.all(clients.map((c) => c.end().catch(() => {})))
}

main().catch((e) => {
  console.log(JSON.stringify({ fatal: String(e && e.stack ? e.stack : e) }))
  process.exit(1)
})
