/* libFuzzer target for the cache's decision and write classification (src/flight/decide.c),
 * which walk libpg_query's JSON of hostile SQL. Besides crashes, it checks what decide.h
 * promises: a verdict in range; tables only with FLIGHT_OK or with calls alone in the way
 * (FLIGHT_CALL and a function list), at most FLIGHT_MAX_TABLES, each name NUL-terminated and
 * non-empty; a cacheable text is one that writes nothing, and one with calls alone in the way
 * changes no catalog; and a deterministic answer (the second from the decision memo). The input is an exact-size heap copy without a NUL. */
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
	check(d.verdict == FLIGHT_OK || d.nfuncs > 0 || d.ntables == 0);
	check(d.nfuncs >= 0 && d.nfuncs <= FLIGHT_MAX_FUNCS && (d.nfuncs == 0 || d.verdict == FLIGHT_CALL));
	for (int i = 0; i < d.ntables; i++) {
		check(memchr(d.tables[i].name, 0, FLIGHT_NAME_MAX) != NULL && d.tables[i].name[0]);
		check(memchr(d.tables[i].schema, 0, FLIGHT_NAME_MAX) != NULL);
	}
	for (int i = 0; i < d.nfuncs; i++)
		check(memchr(d.funcs[i].name, 0, FLIGHT_NAME_MAX) != NULL && memchr(d.funcs[i].schema, 0, FLIGHT_NAME_MAX));
	flight_decide(sql, size, NULL, &again);
	check(again.verdict == d.verdict && again.ntables == d.ntables && again.nfuncs == d.nfuncs);
	for (int i = 0; i < d.nfuncs; i++)
		check(strcmp(again.funcs[i].name, d.funcs[i].name) == 0);
	flight_decide(sql, size, &p, &again);
	check(d.verdict != FLIGHT_OK || again.verdict == FLIGHT_OK || again.verdict == FLIGHT_TABLE_POLICY);

	flight_classify_write(sql, size, &w);
	check(w.ntables >= 0 && w.ntables <= FLIGHT_MAX_TABLES);
	if (d.verdict == FLIGHT_OK)
		check(!w.flush_db && w.ntables == 0); /* a cacheable read writes nothing */
	if (d.nfuncs > 0)
		check(!w.ddl && w.ntables == 0); /* its calls may write, but it is no DDL */
	free(sql);
	return 0;
}
