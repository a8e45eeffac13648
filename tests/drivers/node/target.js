// The target of a node-postgres run, from the environment: PGHOST PGPORT PGUSER PGDATABASE.
// Shared by suite.js and notify_load.js. TLS_ALL=1 (with TLS_CA): every connection over TLS,
// the server's certificate checked against TLS_CA.
'use strict'
const fs = require('fs')
module.exports = {
  host: process.env.PGHOST || '127.0.0.1',
  port: parseInt(process.env.PGPORT || '5432', 10),
  user: process.env.PGUSER || 'tusk_trust',
  database: process.env.PGDATABASE || 'tusk_test',
  ssl: process.env.TLS_ALL ? { ca: fs.readFileSync(process.env.TLS_CA), servername: 'localhost' } : false,
  connectionTimeoutMillis: 30000,
}
