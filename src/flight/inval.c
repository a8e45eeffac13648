/* Version counters (inval.h). */
#include "flight/inval.h"

#include <string.h>
#include <xxhash.h>

uint16_t flight_inval_slot(const char *database, const char *table)
{
	XXH64_hash_t h = XXH3_64bits_withSeed(table, strlen(table), XXH3_64bits(database, strlen(database)));
	return (uint16_t)(h % FLIGHT_INVAL_SLOTS);
}

uint16_t flight_inval_db_slot(const char *database)
{
	return (uint16_t)(XXH3_64bits(database, strlen(database)) % FLIGHT_INVAL_DB_SLOTS);
}

void flight_inval_snapshot(struct flight_inval *iv, const char *database, const struct flight_decision *d,
			   struct flight_versions *out)
{
	out->n = d->ntables;
	out->db_slot = flight_inval_db_slot(database);
	out->busy = atomic_load(&iv->busy_db[out->db_slot]) != 0;
	for (int i = 0; i < d->ntables; i++) {
		out->slot[i] = flight_inval_slot(database, d->tables[i].name);
		out->busy = out->busy || atomic_load(&iv->busy[out->slot[i]]) != 0;
		out->v[i] = atomic_load(&iv->table[out->slot[i]]);
	}
	out->db_v = atomic_load(&iv->db[out->db_slot]);
}

bool flight_inval_current(struct flight_inval *iv, const struct flight_versions *v)
{
	/* The writer bumps before it releases: a write that ended since the snapshot shows as a
	 * moved version, one still in flight as busy. */
	if (v->busy || atomic_load(&iv->db[v->db_slot]) != v->db_v || atomic_load(&iv->busy_db[v->db_slot]))
		return false;
	for (int i = 0; i < v->n; i++)
		if (atomic_load(&iv->table[v->slot[i]]) != v->v[i] || atomic_load(&iv->busy[v->slot[i]]))
			return false;
	return true;
}

bool flight_versions_equal(const struct flight_versions *a, const struct flight_versions *b)
{
	if (a->n != b->n || a->db_slot != b->db_slot || a->db_v != b->db_v)
		return false;
	for (int i = 0; i < a->n; i++)
		if (a->slot[i] != b->slot[i] || a->v[i] != b->v[i])
			return false;
	return true;
}

void flight_inval_bump(struct flight_inval *iv, uint16_t slot)
{
	atomic_fetch_add(&iv->table[slot % FLIGHT_INVAL_SLOTS], 1);
}

void flight_inval_bump_db(struct flight_inval *iv, uint16_t db_slot)
{
	atomic_fetch_add(&iv->db[db_slot % FLIGHT_INVAL_DB_SLOTS], 1);
}

void flight_inval_bump_ddl(struct flight_inval *iv, uint16_t db_slot)
{
	atomic_fetch_add(&iv->ddl[db_slot % FLIGHT_INVAL_DB_SLOTS], 1);
}

void flight_inval_hold(struct flight_inval *iv, uint16_t slot)
{
	atomic_fetch_add(&iv->busy[slot % FLIGHT_INVAL_SLOTS], 1);
}

void flight_inval_release(struct flight_inval *iv, uint16_t slot)
{
	atomic_fetch_sub(&iv->busy[slot % FLIGHT_INVAL_SLOTS], 1);
}

void flight_inval_hold_db(struct flight_inval *iv, uint16_t db_slot)
{
	atomic_fetch_add(&iv->busy_db[db_slot % FLIGHT_INVAL_DB_SLOTS], 1);
}

void flight_inval_release_db(struct flight_inval *iv, uint16_t db_slot)
{
	atomic_fetch_sub(&iv->busy_db[db_slot % FLIGHT_INVAL_DB_SLOTS], 1);
}
