/* One statement's cost directly on a shard, as tusk sends it (docs/kv.md, "Speed"; issue 25):
 * prepared once per connection (PQprepare), then PQexecPrepared with the call's parameters
 * bound, one call at a time, as a worker's shard connection runs one call. Several variants,
 * each on its own connection, alternated SECONDS each for ROUNDS rounds; prints, per call, the
 * median wall time and the median CPU time of the variant's server process
 * (/proc/PID/schedstat: less moved by other work on the machine than wall time), each with its
 * median paired ratio to the first variant's. Run it on the server's machine, as root or the
 * server's user.
 *
 *   cc -O2 -o /tmp/kv-stmt bench/kv_parts/stmt.c -I$(pg_config --includedir) -lpq
 *   /tmp/kv-stmt 'host=127.0.0.1 port=PORT dbname=kv_shard_0' SECONDS ROUNDS VARIANT...
 *
 * A VARIANT is a file: a line "user NAME" (and "password PW"), a line "sql STATEMENT", then
 * one line "param VALUE" per $n in order; VALUE %k is a random key 0..3999 per call, NULL
 * is SQL NULL. The keys must be on the shard (set kv.identity to one shard first). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXP 16
#define MAXV 16
#define MAXR 64

struct variant {
	char name[256], user[64], password[64], *sql;
	char *param[MAXP];
	int nparams;
	PGconn *c;
	int pid;
	double us[MAXR], cpu[MAXR];
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The server process's CPU time so far, in ns. */
static double backend_cpu_ns(int pid)
{
	char path[64];
	double ns = 0;
	snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
	FILE *f = fopen(path, "r");
	if (!f || fscanf(f, "%lf", &ns) != 1) {
		perror(path);
		exit(2);
	}
	fclose(f);
	return ns;
}

static void load(struct variant *v, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		exit(2);
	}
	snprintf(v->name, sizeof v->name, "%s", strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			line[--n] = 0;
		if (!strncmp(line, "user ", 5))
			snprintf(v->user, sizeof v->user, "%s", line + 5);
		else if (!strncmp(line, "password ", 9))
			snprintf(v->password, sizeof v->password, "%s", line + 9);
		else if (!strncmp(line, "sql ", 4))
			v->sql = strdup(line + 4);
		else if (!strncmp(line, "param ", 6) && v->nparams < MAXP)
			v->param[v->nparams++] = strcmp(line + 6, "NULL") ? strdup(line + 6) : NULL;
	}
	free(line);
	fclose(f);
	if (!v->sql) {
		fprintf(stderr, "%s: no sql line\n", path);
		exit(2);
	}
}

static void connect_prepare(struct variant *v, const char *conninfo)
{
	char ci[1024];
	snprintf(ci, sizeof ci, "%s user=%s%s%s", conninfo, v->user, *v->password ? " password=" : "", v->password);
	v->c = PQconnectdb(ci);
	if (PQstatus(v->c) != CONNECTION_OK) {
		fprintf(stderr, "%s: %s", v->name, PQerrorMessage(v->c));
		exit(2);
	}
	PGresult *r = PQprepare(v->c, "s", v->sql, 0, NULL);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(stderr, "%s: prepare: %s", v->name, PQerrorMessage(v->c));
		exit(2);
	}
	PQclear(r);
	v->pid = PQbackendPID(v->c);
}

/* µs of wall time per call; *cpu_us: the server process's CPU µs per call */
static double run(struct variant *v, double seconds, double *cpu_us)
{
	char key[16];
	const char *vals[MAXP];
	long calls = 0;
	double c0 = backend_cpu_ns(v->pid), t0 = now_s(), t;
	do {
		snprintf(key, sizeof key, "%d", rand() % 4000);
		for (int i = 0; i < v->nparams; i++)
			vals[i] = v->param[i] && !strcmp(v->param[i], "%k") ? key : v->param[i];
		PGresult *r = PQexecPrepared(v->c, "s", v->nparams, vals, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
			fprintf(stderr, "%s: %s", v->name, PQerrorMessage(v->c));
			exit(2);
		}
		PQclear(r);
		calls++;
	} while ((t = now_s()) - t0 < seconds);
	*cpu_us = (backend_cpu_ns(v->pid) - c0) / 1e3 / (double)calls;
	return (t - t0) * 1e6 / (double)calls;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(const double *a, int n)
{
	double s[MAXR];
	memcpy(s, a, sizeof *a * (size_t)n);
	qsort(s, (size_t)n, sizeof *s, cmp);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: %s CONNINFO SECONDS ROUNDS VARIANT...\n", argv[0]);
		return 2;
	}
	double seconds = atof(argv[2]);
	int rounds = atoi(argv[3]), nv = argc - 4;
	if (rounds < 1 || rounds > MAXR || nv > MAXV)
		return 2;
	static struct variant v[MAXV];
	for (int i = 0; i < nv; i++) {
		load(&v[i], argv[4 + i]);
		connect_prepare(&v[i], argv[1]);
		double cpu;
		run(&v[i], 0.3, &cpu); /* warm: the generic plan, the caches */
	}
	for (int r = 0; r < rounds; r++)
		for (int k = 0; k < nv; k++) {
			/* alternated: each round starts at another variant */
			int i = (r + k) % nv;
			v[i].us[r] = run(&v[i], seconds, &v[i].cpu[r]);
		}
	for (int i = 0; i < nv; i++) {
		double ratio[MAXR], cratio[MAXR];
		for (int r = 0; r < rounds; r++) {
			ratio[r] = v[i].us[r] / v[0].us[r];
			cratio[r] = v[i].cpu[r] / v[0].cpu[r];
		}
		printf("%-14s wall %6.1f us (x%.3f)  server CPU %6.1f us (x%.3f)  wall [", v[i].name, median(v[i].us, rounds),
		       median(ratio, rounds), median(v[i].cpu, rounds), median(cratio, rounds));
		for (int r = 0; r < rounds; r++)
			printf("%s%.0f", r ? " " : "", v[i].us[r]);
		printf("] CPU [");
		for (int r = 0; r < rounds; r++)
			printf("%s%.1f", r ? " " : "", v[i].cpu[r]);
		printf("]\n");
		PQfinish(v[i].c);
	}
	printf("(x: the median of the rounds' ratios to %s's)\n", v[0].name);
	return 0;
}
