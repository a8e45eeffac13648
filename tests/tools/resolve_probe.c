/* resolve_probe CONFIG SERVICE: runs src/resolve/ alone on one service of a tusk config and
 * prints what it does as JSON lines on stdout, for tests/integration/test_resolve.py and
 * bench/resolve_srv.py:
 *   {"event":"update","t":SECONDS,"backends":[[NAME,PORT,WEIGHT,PRIORITY],...]}
 *   {"event":"state","t":..,"kind":..,"rounds":..,"failures":..,"partial":..,"updates":..,
 *    "consecutive_failures":..,"ttl_ms":..,"nbackends":..,"answered":BOOL,"error":".."}
 * Commands on stdin, one a line: "refresh", "state", "quit" (EOF quits too). t is seconds
 * since the resolver started. Logs go to stderr. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "resolve/resolve.h"

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static struct timespec started;

static double since_start(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - started.tv_sec) + (double)(now.tv_nsec - started.tv_nsec) / 1e9;
}

/* Names here are addresses or config text; escape anyway, the error strings come from DNS. */
static void put_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void on_update(void *arg, const struct tp_backend_addr *addrs, const uint32_t *weight,
		      const uint16_t *priority, const uint64_t *source, int n)
{
	(void)arg;
	(void)source;
	pthread_mutex_lock(&out_lock);
	printf("{\"event\":\"update\",\"t\":%.6f,\"backends\":[", since_start());
	for (int i = 0; i < n; i++) {
		printf("%s[", i ? "," : "");
		put_string(addrs[i].name);
		printf(",%u,%u,%u]", addrs[i].port, weight[i], priority[i]);
	}
	printf("]}\n");
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

static void print_state(struct resolve *r)
{
	struct resolve_state st;

	(void)resolve_snapshot(r, &st, NULL, NULL, 0);
	pthread_mutex_lock(&out_lock);
	printf("{\"event\":\"state\",\"t\":%.6f,\"kind\":\"%s\",\"rounds\":%llu,\"failures\":%llu,\"partial\":%llu,"
	       "\"updates\":%llu,\"consecutive_failures\":%d,\"ttl_ms\":%u,\"nbackends\":%d,\"answered\":%s,"
	       "\"next_in\":%.3f,\"error\":",
	       since_start(), st.kind, (unsigned long long)st.rounds, (unsigned long long)st.failures,
	       (unsigned long long)st.partial, (unsigned long long)st.updates, st.consecutive_failures, st.ttl_ms,
	       st.nbackends, st.last_answer > 0 ? "true" : "false",
	       st.next_at > 0 ? st.next_at - (double)time(NULL) : -1.0);
	put_string(st.error);
	printf("}\n");
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

int main(int argc, char **argv)
{
	struct tusk_config *cfg;
	const struct config_service *svc = NULL;
	struct resolve *r;
	char line[256];

	if (argc != 3) {
		fprintf(stderr, "usage: resolve_probe CONFIG SERVICE\n");
		return 2;
	}
	if (config_load(argv[1], stderr, &cfg) != 0)
		return 2;
	for (int i = 0; i < cfg->nservices; i++)
		if (strcmp(cfg->services[i].name, argv[2]) == 0)
			svc = &cfg->services[i];
	if (!svc) {
		fprintf(stderr, "resolve_probe: no service %s\n", argv[2]);
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &started);
	r = resolve_start(svc, on_update, NULL);
	if (!r) {
		fprintf(stderr, "resolve_probe: resolve_start: %s\n", strerror(errno));
		return 1;
	}
	config_free(cfg); /* the resolver copied what it needs */
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strcmp(line, "refresh") == 0)
			resolve_refresh(r);
		else if (strcmp(line, "state") == 0)
			print_state(r);
		else if (strcmp(line, "quit") == 0)
			break;
	}
	resolve_stop(r);
	return 0;
}
