/* The console's SET key = value (PgBouncer's, for the keys a reload may change that hold one
 * scalar): the value is checked against the running configuration, kept, and the main thread
 * asked for a reload, which applies every SET kept over the file (daemon_reload). A reload
 * no SET asked for (RELOAD, SIGHUP) forgets them: the file rules again, as in PgBouncer. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "console/console_int.h"
#include "frontend/client_int.h"
#include "runtime/runtime.h"
#include "util/log.h"

#define CONSOLE_SETS_MAX 32 /* distinct keys queued before one reload */

struct console_set {
	char key[CONFIG_NAME_MAX];
	char value[CONSOLE_SET_VALUE_MAX];
};

struct console_sets {
	pthread_mutex_t lock; /* guards all below: console workers add, the main thread applies */
	int n;
	struct console_set set[CONSOLE_SETS_MAX];
	bool asked; /* a SET since the last reload: the next one is SET's, not a RELOAD */
};

struct console_sets *console_sets_new(void)
{
	struct console_sets *s = calloc(1, sizeof *s);
	if (s)
		pthread_mutex_init(&s->lock, NULL);
	return s;
}

void console_sets_free(struct console_sets *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* A later SET of a key replaces its queued value. 0 or -ENOSPC. */
static int queue_set(struct console_sets *s, const char *key, const char *value)
{
	int rc = 0, i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->n && strcmp(s->set[i].key, key) != 0; i++)
		;
	if (i == CONSOLE_SETS_MAX) {
		rc = -ENOSPC;
	} else {
		snprintf(s->set[i].key, sizeof s->set[i].key, "%s", key);
		snprintf(s->set[i].value, sizeof s->set[i].value, "%s", value);
		if (i == s->n)
			s->n++;
		s->asked = true;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int console_sets_apply(struct console_sets *s, struct tusk_config *cfg)
{
	int applied = 0;
	char err[256];

	pthread_mutex_lock(&s->lock);
	if (!s->asked && s->n > 0) {
		log_info(NULL, NULL, "reload: the %d SET%s from the admin console end: the file's values apply", s->n,
			 s->n == 1 ? "" : "s");
		s->n = 0;
	}
	s->asked = false;
	for (int i = 0; i < s->n; i++) {
		if (config_set(cfg, s->set[i].key, s->set[i].value, err, sizeof err) < 0) {
			log_error(NULL, NULL, "reload: SET %s = %s from the admin console not applied: %s", s->set[i].key,
				  s->set[i].value, err);
			continue;
		}
		log_info(NULL, NULL, "reload: SET %s = %s from the admin console (until a RELOAD)", s->set[i].key,
			 s->set[i].value);
		applied++;
	}
	pthread_mutex_unlock(&s->lock);
	return applied;
}

bool console_set(struct console_session *cs, const struct console_cmd *cmd)
{
	struct client *c = cs->v.client;
	struct runtime *rt = c->worker->rt;
	/* Checked on a copy of the running generation: a scalar SET writes one field of it and
	 * allocates nothing, so the copy's pointers stay the generation's, untouched. */
	struct tusk_config scratch = *rt->cfg;
	char err[256];

	int rc = config_set(&scratch, cmd->arg, cmd->value, err, sizeof err);
	if (rc < 0) {
		vdb_error(&cs->v, rc == -ENOENT ? "42704" : rc == -EPERM ? "55P02" : "22023", "SET %s", err);
		return false;
	}
	if (queue_set(rt->sets, cmd->arg, cmd->value) < 0) {
		vdb_error(&cs->v, "53400", "SET: %d settings already wait for the reload", CONSOLE_SETS_MAX);
		return false;
	}
	log_info(c->id, c->ctx, "SET %s = %s queued for the reload", cmd->arg, cmd->value);
	return true;
}
