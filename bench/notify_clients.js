// bench/notify.py's clients: CLIENTS node-postgres clients (tests/drivers/node's pinned pg),
// client i LISTENs to "ch" + (i % CHANNELS), then prints {"ready": true}. Each notification's
// payload is the sender's wall-clock time in ms just before its NOTIFY; the client records
// now - that. When stdin ends it prints {"n", "p50_ms", "p99_ms", "max_ms", "errors"} and exits.
// Env: PGHOST PGPORT PGUSER PGDATABASE, CLIENTS, CHANNELS.
'use strict'
const path = require('path')
const { performance } = require('perf_hooks')
const nodeDir = path.join(__dirname, '..', 'tests', 'drivers', 'node')
const pg = require(path.join(nodeDir, 'node_modules', 'pg'))
const base = require(path.join(nodeDir, 'target'))

const N = parseInt(process.env.CLIENTS || '200', 10)
const C = parseInt(process.env.CHANNELS || '20', 10)
const now = () => performance.timeOrigin + performance.now()

async function main() {
  const lat = []
  let errors = 0
  const clients = []
  for (let i = 0; i < N; i += 50) {
    const batch = []
    for (let j = i; j < Math.min(N, i + 50); j++) {
      const c = new pg.Client(base)
      c.on('notification', (m) => { const t = parseFloat(m.payload); if (t > 0) lat.push(now() - t) })
      c.on('error', () => { errors++ })
      batch.push(c.connect().then(() => c.query(`LISTEN ch${j % C}`)).then(() => c))
    }
    clients.push(...(await Promise.all(batch)))
  }
  console.log(JSON.stringify({ ready: true }))
  process.stdin.resume()
  process.stdin.on('end', async () => {
    lat.sort((a, b) => a - b)
    const q = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : null)
    console.log(JSON.stringify({ n: lat.length, p50_ms: q(0.5), p99_ms: q(0.99), max_ms: lat.length ? lat[lat.length - 1] : null, errors }))
    await Promise.all(clients.map((c) => c.end().catch(() => {})))
    process.exit(0)
  })
}

main().catch((e) => { console.log(JSON.stringify({ fatal: String(e && e.stack ? e.stack : e) })); process.exit(1) })
