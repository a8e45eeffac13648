/* The relay's hook list (frontend/relay_hooks.h), issue 23: a pool rule without the cache or
 * the split gets no list at all (NULL: the relay tests one pointer and enters no file of
 * flight/ or split/), and a rule with either gets exactly the features it configures, in
 * registration order. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "flight/serve.h"
#include "frontend/client_int.h"
#include "frontend/relay_hooks.h"
#include "split/route.h"

static struct tusk_config *load(const char *yaml)
{
	char path[] = "/tmp/tusk_test_relay_hooks_XXXXXX.yaml";
	int fd = mkstemps(path, 5);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
	close(fd);
	struct tusk_config *cfg = NULL;
	FILE *errs = fopen("/dev/null", "w");
	int n = config_load(path, errs, &cfg);
	fclose(errs);
	unlink(path);
	assert_int_equal(n, 0);
	assert_non_null(cfg);
	return cfg;
}

static int setup(void **state)
{
	(void)state;
	relay_hooks_unregister_all();
	/* As main.c registers them. */
	assert_int_equal(relay_hooks_register(&split_relay_hooks), 0);
	assert_int_equal(relay_hooks_register(&flight_relay_hooks), 0);
	return 0;
}

#define SERVICE "services:\n  main:\n    hosts: [db1, db2]\n"

static void test_plain_rule_gets_no_hooks(void **state)
{
	(void)state;
	struct tusk_config *cfg = load(SERVICE "pools:\n"
					       "  - database: a\n    mode: transaction\n"
					       "  - database: b\n    mode: session\n");
	for (int i = 0; i < cfg->npools; i++)
		assert_null(relay_hooks_choose(cfg, &cfg->pools[i]));
	assert_null(relay_hooks_choose(cfg, NULL)); /* no pool yet */
	config_free(cfg);
}

static void test_cache_rule_attaches_cache_everywhere(void **state)
{
	(void)state;
	/* The cache tracks every client's writes once any rule keeps results. */
	struct tusk_config *cfg = load(SERVICE "pools:\n"
					       "  - database: a\n    mode: transaction\n    cache: on\n"
					       "  - database: b\n    mode: transaction\n");
	for (int i = 0; i < cfg->npools; i++) {
		const struct relay_hook_list *l = relay_hooks_choose(cfg, &cfg->pools[i]);
		assert_non_null(l);
		assert_int_equal(l->n, 1);
		assert_ptr_equal(l->h[0], &flight_relay_hooks);
	}
	config_free(cfg);
}

static void test_split_rule_attaches_split_only_there(void **state)
{
	(void)state;
	struct tusk_config *cfg = load(SERVICE "pools:\n"
					       "  - database: a\n    mode: transaction\n"
					       "    target_session_attrs: read-write-split\n"
					       "  - database: b\n    mode: transaction\n");
	const struct relay_hook_list *l = relay_hooks_choose(cfg, &cfg->pools[0]);
	assert_non_null(l);
	assert_int_equal(l->n, 1);
	assert_ptr_equal(l->h[0], &split_relay_hooks);
	assert_null(relay_hooks_choose(cfg, &cfg->pools[1]));
	config_free(cfg);
}

static void test_both_in_registration_order(void **state)
{
	(void)state;
	struct tusk_config *cfg = load(SERVICE "cache: coalesce\npools:\n"
					       "  - database: a\n    mode: transaction\n"
					       "    target_session_attrs: read-write-split\n");
	const struct relay_hook_list *l = relay_hooks_choose(cfg, &cfg->pools[0]);
	assert_non_null(l);
	assert_int_equal(l->n, 2);
	assert_ptr_equal(l->h[0], &split_relay_hooks);
	assert_ptr_equal(l->h[1], &flight_relay_hooks);
	config_free(cfg);
}

static bool always(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	(void)cfg;
	(void)rule;
	return true;
}

static void nop_scanned(struct client *c, const uint8_t *p, size_t n)
{
	(void)c;
	(void)p;
	(void)n;
}

static void nop_ready(struct client *c, bool last)
{
	(void)c;
	(void)last;
}

/* A list's has holds exactly the callbacks some hook in it defines: the relay skips the walk
 * of any other (one bit test per server message instead of a walk, issue 28). */
static void test_list_says_which_callbacks_it_has(void **state)
{
	(void)state;
	static struct relay_hooks a = { .name = "a", .wants = always, .ready = nop_ready };
	static struct relay_hooks b = { .name = "b", .wants = always, .scanned = nop_scanned, .ready = nop_ready };
	relay_hooks_unregister_all();
	assert_int_equal(relay_hooks_register(&a), 0);
	const struct relay_hook_list *l = relay_hooks_choose(NULL, NULL);
	assert_non_null(l);
	assert_int_equal(l->has, RH_READY);
	assert_int_equal(relay_hooks_register(&b), 0);
	l = relay_hooks_choose(NULL, NULL);
	assert_int_equal(l->n, 2);
	assert_int_equal(l->has, RH_READY | RH_SCANNED);
	/* the registered features: split has claim, no scanned; the cache has scanned */
	relay_hooks_unregister_all();
	assert_int_equal(relay_hooks_register(&split_relay_hooks), 0);
	assert_int_equal(relay_hooks_register(&flight_relay_hooks), 0);
	struct tusk_config *cfg = load(SERVICE "pools:\n"
					       "  - database: a\n    mode: transaction\n"
					       "    target_session_attrs: read-write-split\n");
	l = relay_hooks_choose(cfg, &cfg->pools[0]);
	assert_non_null(l);
	assert_true(l->has & RH_CLAIM);
	assert_false(l->has & RH_SCANNED);
	config_free(cfg);
	relay_hooks_unregister_all();
}

static void nop_sql(struct client *c, const char *sql, size_t len)
{
	(void)c;
	(void)sql;
	(void)len;
}

/* A feature's dormant callbacks are off for a client until the feature wakes it, and off again
 * once it sleeps; another hook's same callback keeps the bit (LISTEN/NOTIFY's per-request
 * hooks cost nothing for clients that never listened, issue 28). */
static void test_dormant_until_woken(void **state)
{
	(void)state;
	static struct relay_hooks a = {
		.name = "a", .wants = always, .ready = nop_ready, .sql = nop_sql, .dormant = RH_READY,
	};
	static struct relay_hooks b = { .name = "b", .wants = always, .ready = nop_ready };
	relay_hooks_unregister_all();
	assert_int_equal(relay_hooks_register(&a), 0);
	struct client c;
	memset(&c, 0, sizeof c);
	c.hooks = relay_hooks_choose(NULL, NULL);
	assert_non_null(c.hooks);
	assert_int_equal(c.hooks->has, RH_READY | RH_SQL);
	relay_hooks_wake(&c, &a, false);
	assert_int_equal(c.hooks_has, RH_SQL);
	assert_false(RELAY_HOOKS_HAS(&c, RH_READY));
	relay_hooks_wake(&c, &a, true);
	assert_int_equal(c.hooks_has, RH_READY | RH_SQL);
	assert_true(RELAY_HOOKS_HAS(&c, RH_READY));
	relay_hooks_wake(&c, &a, false);
	assert_int_equal(c.hooks_has, RH_SQL);
	/* b defines ready too, never dormant: the bit stays whatever a's state */
	assert_int_equal(relay_hooks_register(&b), 0);
	c.hooks = relay_hooks_choose(NULL, NULL);
	relay_hooks_wake(&c, &a, false);
	assert_int_equal(c.hooks_has, RH_READY | RH_SQL);
	/* no list: nothing is called, awake or not */
	c.hooks = NULL;
	relay_hooks_wake(&c, &a, true);
	assert_int_equal(c.hooks_has, 0);
	relay_hooks_unregister_all();
}

static void test_registry_is_bounded(void **state)
{
	(void)state;
	static struct relay_hooks extra[RELAY_HOOKS_MAX + 1];
	relay_hooks_unregister_all();
	for (int i = 0; i <= RELAY_HOOKS_MAX; i++)
		extra[i] = (struct relay_hooks){ .name = "extra", .wants = always };
	for (int i = 0; i < RELAY_HOOKS_MAX; i++)
		assert_int_equal(relay_hooks_register(&extra[i]), 0);
	assert_int_equal(relay_hooks_register(&extra[0]), 0); /* again: a no-op (a second start) */
	assert_int_equal(relay_hooks_register(&extra[RELAY_HOOKS_MAX]), -ENOSPC);
	const struct relay_hook_list *l = relay_hooks_choose(NULL, NULL);
	assert_non_null(l);
	assert_int_equal(l->n, RELAY_HOOKS_MAX);
	relay_hooks_unregister_all();
	assert_null(relay_hooks_choose(NULL, NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_plain_rule_gets_no_hooks, setup),
		cmocka_unit_test_setup(test_cache_rule_attaches_cache_everywhere, setup),
		cmocka_unit_test_setup(test_split_rule_attaches_split_only_there, setup),
		cmocka_unit_test_setup(test_both_in_registration_order, setup),
		cmocka_unit_test(test_list_says_which_callbacks_it_has),
		cmocka_unit_test(test_dormant_until_woken),
		cmocka_unit_test(test_registry_is_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
