// The target of a node-postgres run, from the environment: PGHOST PGPORT PGUSER PGDATABASE.
// Shared by suite.js and notify_load.js.
'use strict'
module.exports = {
  host: process.env.PGHOST || '127.0.0.1',
  port: parseInt(process.env.PGPORT || '5432', 10),
  user: process.env.PGUSER || 'tusk_trust',
  database: process.env.PGDATABASE || 'tusk_test',
  ssl: false,
  connectionTimeoutMillis: 30000,
}
