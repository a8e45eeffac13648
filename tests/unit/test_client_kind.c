/* Session kinds (frontend/client_kind.h): a startup packet's database picks the kind once,
 * from the kinds the virtual databases registered (console, kv), else the pooled one. Guards
 * issue 23 item 2: client.c no longer names the console or kv. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "config/config.h"
#include "console/console.h"
#include "frontend/client_kind.h"
#include "kv/front.h"

static void test_kinds_by_database(void **state)
{
	(void)state;
	struct tusk_config cfg;
	memset(&cfg, 0, sizeof cfg);

	/* Before any registration, everything is pooled. */
	assert_string_equal(client_kind_of(&cfg, "tusk")->name, "pooled");
	console_register();
	kv_front_register();
	console_register(); /* idempotent: daemon_start runs again after a takeover */
	assert_string_equal(client_kind_of(&cfg, "tusk")->name, "console");
	assert_string_equal(client_kind_of(&cfg, "pgbouncer")->name, "console");
	assert_string_equal(client_kind_of(&cfg, "postgres")->name, "pooled");
	assert_string_equal(client_kind_of(&cfg, "Tusk")->name, "pooled");
	/* kv only when the configuration has a kv section. */
	assert_string_equal(client_kind_of(&cfg, "kv")->name, "pooled");
	cfg.kv.zone = (char *)"z1";
	assert_string_equal(client_kind_of(&cfg, "kv")->name, "kv");
	assert_string_equal(client_kind_of(&cfg, "tusk")->name, "console");

	const struct client_kind *k = client_kind_of(&cfg, "kv");
	assert_true(k->resident);
	assert_non_null(k->closed);
	assert_false(client_kind_of(&cfg, "postgres")->resident);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kinds_by_database),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
