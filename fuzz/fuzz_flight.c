/* libFuzzer target for the cache's decision and write classification (src/flight/decide.c),
 * which walk libpg_query's JSON of hostile SQL. Besides crashes, it checks what decide.h
 * promises: a verdict in range; tables only with FLIGHT_OK, at most FLIGHT_MAX_TABLES, each
 * name NUL-terminated and non-empty; a cacheable text is one that writes nothing; and a
 * deterministic answer. The input is an exact-size heap copy without a NUL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flight/decide.h"

static void check(int ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *sql = malloc(size ? size : 1);
	struct flight_decision d, again;
	struct flight_write w;
	char *allow[] = { "t", "public.u" };
	struct flight_table_policy p = { allow, 2, NULL, 0 };

	if (!sql)
		return 0;
	memcpy(sql, data, size);
	flight_decide(sql, size, NULL, &d);
	check(d.verdict >= FLIGHT_OK && d.verdict < FLIGHT_VERDICT_COUNT);
	check(d.ntables >= 0 && d.ntables <= FLIGHT_MAX_TABLES);
	check(d.verdict == FLIGHT_OK || d.ntables == 0);
	for (int i = 0; i < d.ntables; i++) {
		check(memchr(d.tables[i].name, 0, FLIGHT_NAME_MAX) != NULL && d.tables[i].name[0]);
		check(memchr(d.tables[i].schema, 0, FLIGHT_NAME_MAX) != NULL);
	}
	flight_decide(sql, size, NULL, &again);
	check(again.verdict == d.verdict && again.ntables == d.ntables);
	flight_decide(sql, size, &p, &again);
	check(d.verdict != FLIGHT_OK || again.verdict == FLIGHT_OK || again.verdict == FLIGHT_TABLE_POLICY);

	flight_classify_write(sql, size, &w);
	check(w.ntables >= 0 && w.ntables <= FLIGHT_MAX_TABLES);
	if (d.verdict == FLIGHT_OK)
		check(!w.flush_db && w.ntables == 0); /* a cacheable read writes nothing */
	free(sql);
	return 0;
}
