/* libFuzzer target for read-write-split's decision (src/split/split.c and the read-only mode
 * of src/flight/decide.c's walk), which read libpg_query's JSON of hostile SQL. Besides
 * crashes, it checks what split.h promises: a text that may go to a standby holds no INSERT,
 * UPDATE, DELETE or MERGE by the write classifier's account either; whatever the cache finds inert is read-only; a READ ONLY
 * BEGIN goes to a standby; and the answer is deterministic. The input is an exact-size heap
 * copy without a NUL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flight/decide.h"
#include "split/split.h"

static void check(int ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *sql = malloc(size ? size : 1);
	struct flight_decision d;
	struct flight_write w;
	enum router_split s;

	if (!sql)
		return 0;
	memcpy(sql, data, size);
	s = router_split_decide(sql, size);
	check(s == ROUTER_SPLIT_PRIMARY || s == ROUTER_SPLIT_STANDBY);
	check(router_split_decide(sql, size) == s);
	/* No INSERT/UPDATE/DELETE/MERGE in it. (flush_db may still be set: the write classifier
	 * is conservative about BEGIN with modes and about more than FLIGHT_MAX_TABLES tables.) */
	if (s == ROUTER_SPLIT_STANDBY) {
		flight_classify_write(sql, size, &w);
		check(w.ntables == 0);
	}
	if (router_begins_read_only(sql, size))
		check(s == ROUTER_SPLIT_STANDBY);
	flight_decide(sql, size, NULL, &d);
	if (d.verdict == FLIGHT_OK)
		check(flight_read_only(sql, size));
	free(sql);
	return 0;
}
