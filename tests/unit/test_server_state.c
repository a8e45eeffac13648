/* The server state machine's one owner (server_set_state, pool/server.c): the table of legal
 * moves, and that an illegal move is caught: aborts in strict (debug) mode, is logged and
 * counted as illegal otherwise. Guards issue 23 item 4 (relay.c assigned s->state by hand, so
 * nothing checked a move). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool/server.h"

static void test_legal_moves(void **state)
{
	(void)state;
	assert_true(server_state_legal(SERVER_CONNECTING, SERVER_LOGIN));
	assert_true(server_state_legal(SERVER_LOGIN, SERVER_IDLE));
	assert_true(server_state_legal(SERVER_IDLE, SERVER_ACTIVE));
	assert_true(server_state_legal(SERVER_ACTIVE, SERVER_IDLE));
	assert_true(server_state_legal(SERVER_ACTIVE, SERVER_DRAINING));
	assert_true(server_state_legal(SERVER_DRAINING, SERVER_IDLE));
	assert_true(server_state_legal(SERVER_IDLE, SERVER_QUERY));
	assert_true(server_state_legal(SERVER_QUERY, SERVER_IDLE));
	for (int st = SERVER_CONNECTING; st <= SERVER_CLOSED; st++)
		assert_true(server_state_legal((enum server_state)st, SERVER_CLOSED));
}

static void test_illegal_moves(void **state)
{
	(void)state;
	assert_false(server_state_legal(SERVER_CLOSED, SERVER_IDLE));
	assert_false(server_state_legal(SERVER_CLOSED, SERVER_ACTIVE));
	assert_false(server_state_legal(SERVER_CONNECTING, SERVER_ACTIVE));
	assert_false(server_state_legal(SERVER_LOGIN, SERVER_ACTIVE));
	assert_false(server_state_legal(SERVER_DRAINING, SERVER_ACTIVE));
	assert_false(server_state_legal(SERVER_QUERY, SERVER_ACTIVE));
	assert_false(server_state_legal(SERVER_ACTIVE, SERVER_ACTIVE));
	assert_false(server_state_legal(SERVER_IDLE, SERVER_LOGIN));
	assert_false(server_state_legal((enum server_state)99, SERVER_IDLE));
	assert_false(server_state_legal(SERVER_IDLE, (enum server_state)99));
}

/* Not strict (release): the move is logged and reported, the state set, the process goes on. */
static void test_illegal_move_reported(void **state)
{
	(void)state;
	struct server *s = calloc(1, sizeof *s);
	assert_non_null(s);
	bool was = server_state_strict;
	server_state_strict = false;
	s->state = SERVER_IDLE;
	assert_true(server_set_state(s, SERVER_ACTIVE));
	assert_int_equal(s->state, SERVER_ACTIVE);
	s->state = SERVER_CLOSED;
	assert_false(server_set_state(s, SERVER_ACTIVE));
	assert_int_equal(s->state, SERVER_ACTIVE);
	server_state_strict = was;
	free(s);
}

/* Strict (debug builds): an illegal move aborts the process; a legal one does not. */
static int run_child(enum server_state from, enum server_state to)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct server *s = calloc(1, sizeof *s);
		if (!s)
			_exit(3);
		server_state_strict = true;
		s->state = from;
		(void)server_set_state(s, to);
		_exit(0);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void test_illegal_move_aborts_when_strict(void **state)
{
	(void)state;
	int st = run_child(SERVER_CLOSED, SERVER_ACTIVE);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGABRT);
	st = run_child(SERVER_IDLE, SERVER_ACTIVE);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_legal_moves),
		cmocka_unit_test(test_illegal_moves),
		cmocka_unit_test(test_illegal_move_reported),
		cmocka_unit_test(test_illegal_move_aborts_when_strict),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
