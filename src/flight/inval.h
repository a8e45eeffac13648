/* Invalidation by version numbers. Each (database, table name) hashes to one of
 * FLIGHT_INVAL_SLOTS counters and each database to one of FLIGHT_INVAL_DB_SLOTS; a write
 * that commits through tusk bumps its tables' counters, anything tusk cannot read bumps its
 * database's. A result carries the counters it saw before its query was sent and is good
 * only while they are unchanged. Collisions and the schema left out of the hash (an
 * unqualified name may be any schema's) only cost misses, never a stale row.
 * Lock-free: seq_cst atomics, no allocation. */
#ifndef TUSK_FLIGHT_INVAL_H
#define TUSK_FLIGHT_INVAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "flight/decide.h"

#define FLIGHT_INVAL_SLOTS    4096
#define FLIGHT_INVAL_DB_SLOTS 256

struct flight_inval {
	_Atomic uint64_t table[FLIGHT_INVAL_SLOTS];
	_Atomic uint64_t db[FLIGHT_INVAL_DB_SLOTS];
	/* Per database slot too: statements that may have changed the catalog (DDL ...), for
	 * the volatility answers (volatility.h). Each also bumps db[]. */
	_Atomic uint64_t ddl[FLIGHT_INVAL_DB_SLOTS];
	/* Writes in flight: how many clients have sent a write to the slot's tables (or one tusk
	 * cannot name, for the database) whose end tusk has not seen yet. PostgreSQL makes a
	 * commit visible before tusk reads its ReadyForQuery, so between the two a version that
	 * has not moved does not prove a result current: while a slot is held, nothing of it is
	 * served, joined or stored. */
	_Atomic uint32_t busy[FLIGHT_INVAL_SLOTS];
	_Atomic uint32_t busy_db[FLIGHT_INVAL_DB_SLOTS];
};

struct flight_versions {
	int n;
	uint16_t slot[FLIGHT_MAX_TABLES];
	uint64_t v[FLIGHT_MAX_TABLES];
	uint16_t db_slot;
	uint64_t db_v;
	bool busy; /* a write to one of them was in flight at the snapshot */
};

uint16_t flight_inval_slot(const char *database, const char *table);
uint16_t flight_inval_db_slot(const char *database);

/* The counters of d's tables (and of the database) now. */
void flight_inval_snapshot(struct flight_inval *iv, const char *database, const struct flight_decision *d,
			   struct flight_versions *out);
/* Whether none of v's counters moved since the snapshot, and no write to them is in flight. */
bool flight_inval_current(struct flight_inval *iv, const struct flight_versions *v);
bool flight_versions_equal(const struct flight_versions *a, const struct flight_versions *b);

void flight_inval_bump(struct flight_inval *iv, uint16_t slot);
void flight_inval_bump_db(struct flight_inval *iv, uint16_t db_slot);
void flight_inval_bump_ddl(struct flight_inval *iv, uint16_t db_slot);
/* A write to slot's tables (to the database: _db) is in flight / has ended. Hold before the
 * write is sent and before its first bump; bump at its end, then release. */
void flight_inval_hold(struct flight_inval *iv, uint16_t slot);
void flight_inval_release(struct flight_inval *iv, uint16_t slot);
void flight_inval_hold_db(struct flight_inval *iv, uint16_t db_slot);
void flight_inval_release_db(struct flight_inval *iv, uint16_t db_slot);

#endif
