/* tusk: wires configuration, logging, the runtime and signals together. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "auth/hba.h"
#include "auth/ident.h"
#include "auth/userlist.h"
#include "config/config.h"
#include "config/import_pgbouncer.h"
#include "kv/admin.h"
#include "kv/replicate.h"
#include "top/top.h"
#include "kv/router.h"
#include "metrics/metrics.h"
#include "net/tls.h"
#include "pool/pool.h"
#include "daemon/daemon.h"
#include "daemon/takeover.h"
#include "frontend/cancel.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "util/log.h"
#include "util/pidfile.h"
#include "util/sdnotify.h"

/* The main thread's state after start: it waits for signals and takeover requests, and
 * runs the drain and the stats line. */
struct control {
	struct runtime rt;
	struct metrics_http *http;
	const char *path;
	int sigfd;
	int takeover_fd;   /* listening takeover socket, or -1 */
	int takeover_conn; /* --takeover: connection to the old process until it drains */
	int successor;     /* after a takeover of this process: the new process's connection,
	                    * which hands over the cancels for our clients; or -1 */
	double drain_deadline; /* > 0 while draining */
	double next_stats;
	double stats_at;            /* when the last stats line's counters were read */
	uint64_t stats_xacts, stats_queries, stats_in, stats_out; /* their values then */
};

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void begin_drain(struct control *ctl, const char *why)
{
	if (ctl->drain_deadline > 0)
		return;
	const struct tusk_config *cfg = ctl->rt.cfg;
	(void)sdnotify("STOPPING=1\nSTATUS=draining");
	log_info(NULL, NULL, "%s: no longer accepting; waiting up to %.1fs for %d client%s to finish their transactions",
		 why, (double)cfg->shutdown_timeout_ms / 1000.0, atomic_load(&ctl->rt.nclients),
		 atomic_load(&ctl->rt.nclients) == 1 ? "" : "s");
	daemon_drain(&ctl->rt);
	/* Never 0: 0 means "not draining". */
	ctl->drain_deadline = now_mono() + (double)cfg->shutdown_timeout_ms / 1000.0 + 1e-6;
	if (ctl->takeover_fd >= 0) {
		close(ctl->takeover_fd);
		ctl->takeover_fd = -1;
	}
}

/* One line per stats_period: gauges now, rates since the last line (stats/stats.h). */
static void log_stats(struct control *ctl)
{
	struct stats_pool_snapshot t;
	double now = now_mono(), dt;

	pool_totals(&ctl->rt, &t);
	dt = ctl->stats_at > 0 ? now - ctl->stats_at : 0;
	if (dt <= 0)
		dt = 1e9; /* first line: rates are not known yet, print 0 */
	log_info(NULL, NULL,
		 "stats: clients %d, servers %d (active %d, idle %d, connecting %d), waiting %d, "
		 "xacts/s %.1f, queries/s %.1f, in %.0f B/s, out %.0f B/s",
		 atomic_load(&ctl->rt.nclients), t.sv_active + t.sv_idle + t.sv_connecting, t.sv_active, t.sv_idle,
		 t.sv_connecting, t.waiters, (double)(t.c.xact_count - ctl->stats_xacts) / dt,
		 (double)(t.c.query_count - ctl->stats_queries) / dt, (double)(t.c.bytes_received - ctl->stats_in) / dt,
		 (double)(t.c.bytes_sent - ctl->stats_out) / dt);
	ctl->stats_at = now;
	ctl->stats_xacts = t.c.xact_count;
	ctl->stats_queries = t.c.query_count;
	ctl->stats_in = t.c.bytes_received;
	ctl->stats_out = t.c.bytes_sent;
}

/* Until stopped: 0 for a clean stop (drained, or SIGINT), 1 otherwise. */
static int control_loop(struct control *ctl)
{
	ctl->next_stats = now_mono() + (double)ctl->rt.cfg->stats_period_ms / 1000.0;
	for (;;) {
		double now = now_mono();
		double wait = 1.0;
		uint64_t period = ctl->rt.cfg->stats_period_ms;

		if (ctl->drain_deadline > 0) {
			if (atomic_load(&ctl->rt.nclients) == 0) {
				log_info(NULL, NULL, "drained: every client has finished");
				return 0;
			}
			if (now >= ctl->drain_deadline) {
				log_info(NULL, NULL, "shutdown_timeout reached: closing %d remaining client%s",
					 atomic_load(&ctl->rt.nclients), atomic_load(&ctl->rt.nclients) == 1 ? "" : "s");
				return 0;
			}
			wait = 0.05;
		}
		if (period > 0) {
			if (now >= ctl->next_stats) {
				log_stats(ctl);
				ctl->next_stats = now + (double)period / 1000.0;
			}
			if (ctl->next_stats - now < wait)
				wait = ctl->next_stats - now;
		} else {
			ctl->next_stats = now + 1.0; /* re-armed when stats_period is reloaded */
		}

		/* Cancel requests handed to the process this one took over from, held until it
		 * answers: the earliest one's time limit. */
		double held = cancel_registry_tick(ctl->rt.cancels);
		if (held >= 0 && held < wait)
			wait = held;

		struct pollfd pfd[4] = { { .fd = ctl->sigfd, .events = POLLIN },
					 { .fd = ctl->takeover_fd, .events = POLLIN },
					 { .fd = ctl->successor, .events = POLLIN },
					 { .fd = cancel_registry_predecessor(ctl->rt.cancels), .events = POLLIN } };
		int n = poll(pfd, 4, (int)(wait * 1000) + 1); /* a negative fd is skipped */
		if (n <= 0)
			continue;
		if (pfd[3].fd >= 0 && (pfd[3].revents & (POLLIN | POLLHUP | POLLERR)))
			(void)cancel_registry_predecessor_input(ctl->rt.cancels); /* closes it at its end */
		if (ctl->successor >= 0 && (pfd[2].revents & (POLLIN | POLLHUP | POLLERR)) &&
		    cancel_registry_successor_input(ctl->rt.cancels, ctl->successor) < 0) {
			cancel_registry_set_successor(ctl->rt.cancels, -1); /* no worker answers on it now */
			close(ctl->successor);
			ctl->successor = -1;
		}
		if (ctl->takeover_fd >= 0 && (pfd[1].revents & POLLIN)) {
			int rc = takeover_serve(&ctl->rt, &ctl->takeover_fd, &ctl->successor);
			if (rc == 1) {
				cancel_registry_set_successor(ctl->rt.cancels, ctl->successor);
				begin_drain(ctl, "online restart");
			} else if (rc < 0) {
				log_warn(NULL, NULL, "takeover: %s", strerror(-rc));
			}
		}
		if (!(pfd[0].revents & POLLIN))
			continue;
		struct signalfd_siginfo si;
		if (read(ctl->sigfd, &si, sizeof si) != (ssize_t)sizeof si)
			continue;
		switch (si.ssi_signo) {
		case SIGHUP:
			(void)sdnotify_reloading();
			log_info(NULL, NULL, "SIGHUP: reloading %s", ctl->path);
			if (daemon_reload(&ctl->rt, ctl->path) == 0)
				ctl->next_stats = now_mono() + (double)ctl->rt.cfg->stats_period_ms / 1000.0;
			kv_replicate_reload(ctl->rt.kv_replicator); /* the kv catalog too (docs/kv.md) */
			(void)sdnotify("READY=1\nSTATUS=serving");
			break;
		case SIGUSR1: {
			int rc = log_reopen();
			if (rc < 0)
				log_error(NULL, NULL, "SIGUSR1: cannot reopen the log file: %s", strerror(-rc));
			else
				log_info(NULL, NULL, "SIGUSR1: log file reopened");
			break;
		}
		case SIGUSR2:
			begin_drain(ctl, "SIGUSR2");
			break;
		case SIGTERM:
			begin_drain(ctl, "SIGTERM");
			break;
		case SIGINT:
			log_info(NULL, NULL, "SIGINT: shutting down now");
			(void)sdnotify("STOPPING=1");
			return 0;
		}
	}
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: tusk [-c FILE] [--check] [--takeover | --beside] [--version] [--help]\n"
		"       tusk kv init|push|shard ...  (the key-value store: tusk kv --help)\n"
		"       tusk top [CONNINFO]          (live view through the admin console: tusk top --help)\n"
		"       tusk import-pgbouncer [-o tusk.yaml] pgbouncer.ini [userlist.txt]\n"
		"  -c, --config FILE  configuration file (default ./tusk.yaml)\n"
		"      --check        validate the configuration and exit (0 = valid)\n"
		"      --takeover     online restart: take the listeners of the tusk running on\n"
		"                     takeover_socket, then have it drain and exit\n"
		"      --beside       listen beside another process on the same addresses (the\n"
		"                     restart without takeover_socket: then SIGUSR2 the old one);\n"
		"                     without it tusk refuses to start where another one listens\n"
		"  -V, --version      print the version and exit\n"
		"  -h, --help         print this help and exit\n");
}

/* tusk --check: the configuration and the files it names (auth_file, ident_file, hba_file, TLS). */
static int check_config(struct tusk_config *cfg, const char *path)
{
	struct userlist *users;
	struct ident *ident;
	struct hba *hba;
	struct tls_ctx **ltls, **stls;
	int aerr = daemon_load_auth(cfg, stderr, &users, &ident, &hba);
	userlist_free(users);
	hba_free(hba);
	ident_free(ident);
	aerr += daemon_load_tls(cfg, stderr, NULL, &ltls, &stls);
	daemon_free_tls(cfg, ltls, stls);
	struct tls_ctx *rtls;
	aerr += daemon_load_redis_tls(cfg, stderr, &rtls);
	tls_ctx_free(rtls);
	if (aerr > 0) {
		fprintf(stderr, "%s: %d error%s in auth_file/ident_file/hba_file/TLS files; tusk not started\n", path, aerr, aerr == 1 ? "" : "s");
		config_free(cfg);
		return 1;
	}
	printf("%s: configuration is valid\n", path);
	config_free(cfg);
	return 0;
}

/* Signals are taken synchronously by this thread through a signalfd; workers and the
 * logger block them all. The signalfd, or -1 (said on stderr). */
static int take_signals(void)
{
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sigfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sigfd < 0)
		perror("tusk: signalfd");
	return sigfd;
}

/* Serving after --takeover: now the old process may stop accepting; this one answers the
 * next online restart. */
static void takeover_serving(struct control *ctl, int old_pid)
{
	if (takeover_finish(ctl->takeover_conn) == 0) {
		log_info(NULL, NULL, "takeover: pid %d drains; this process serves", old_pid);
		/* Its clients' cancels reach this process now: they go to it over the connection. */
		cancel_registry_set_predecessor(ctl->rt.cancels, ctl->takeover_conn);
	}
	ctl->takeover_conn = -1;
	ctl->takeover_fd = takeover_listen(ctl->rt.cfg->takeover_socket);
	if (ctl->takeover_fd < 0)
		log_error(NULL, NULL, "takeover_socket %s: %s; the next online restart will not find this process",
			  ctl->rt.cfg->takeover_socket, strerror(-ctl->takeover_fd));
	char mainpid[32];
	snprintf(mainpid, sizeof mainpid, "MAINPID=%d", (int)getpid());
	(void)sdnotify(mainpid);
}

/* The kv store's replication threads and the virtual kv database's router (only with a kv
 * section); tusk serves without them. */
static void start_kv(struct runtime *rt)
{
	struct kv_router *kv_router = NULL; /* the virtual kv database's calls */
	if (kv_router_start(rt->cfg, &kv_router) < 0)
		log_error(NULL, NULL, "kv: out of memory; the kv database will not answer");
	rt->kv_router = kv_router;
	/* after the router: it follows every newer catalog the replication reads */
	struct kv_replicator *kv = NULL;
	if (kv_replicate_start(rt->cfg, kv_router ? kv_router_follow : NULL, kv_router, &kv) < 0)
		log_error(NULL, NULL, "kv: out of memory; replication not started");
	rt->kv_replicator = kv; /* SHOW KV and /metrics read its counters */
}

/* After the control loop: kv's threads, the HTTP endpoint and the daemon, in that order. */
static void stop_serving(struct control *ctl)
{
	struct kv_replicator *kv = ctl->rt.kv_replicator;
	struct kv_router *kv_router = ctl->rt.kv_router;
	kv_replicate_stop(kv);
	kv_router_stop(kv_router); /* calls still queued are answered 57P01 on their workers */
	metrics_stop(ctl->http); /* its handlers read what daemon_stop frees */
	daemon_stop(&ctl->rt);
	kv_router_free(kv_router);
	kv_replicate_free(kv); /* after its readers (console, HTTP) are gone */
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "takeover", no_argument, NULL, 't' },
		{ "beside", no_argument, NULL, 'b' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = "tusk.yaml";
	bool check = false, takeover = false, beside = false;
	int opt;

	if (argc > 1 && strcmp(argv[1], "kv") == 0)
		return kv_admin_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "import-pgbouncer") == 0)
		return import_pgbouncer_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "top") == 0)
		return top_main(argc - 1, argv + 1);

	while ((opt = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'k': check = true; break;
		case 't': takeover = true; break;
		case 'b': beside = true; break;
		case 'V': printf("tusk %s\n", TUSK_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}

	struct tusk_config *cfg = NULL;
	int nerr = config_load(path, stderr, &cfg);
	if (nerr > 0) {
		fprintf(stderr, "%s: %d error%s; tusk not started\n", path, nerr, nerr == 1 ? "" : "s");
		return 1;
	}
	if (check)
		return check_config(cfg, path);
	cfg->listen_beside = beside;

	int sigfd = take_signals();
	if (sigfd < 0) {
		config_free(cfg);
		return 1;
	}

	if (log_set_syslog(cfg->log.syslog_ident, cfg->log.syslog_facility) < 0 ||
	    log_init(cfg->log.level, cfg->log.format, cfg->log.target) < 0) {
		fprintf(stderr, "tusk: cannot open log target %s\n", cfg->log.target);
		config_free(cfg);
		return 1;
	}
	struct control ctl = { .path = path, .sigfd = sigfd, .takeover_fd = -1, .takeover_conn = -1, .successor = -1 };
	/* Kept here: cfg is the runtime's once it starts, and a reload may not change it. */
	char pid_path[4096] = "";
	struct runtime_inherited *inherited = NULL;
	int ninherited = 0, old_pid = 0;
	if (takeover) {
		if (!cfg->takeover_socket) {
			log_error(NULL, NULL, "--takeover needs takeover_socket in %s", path);
			goto err_log;
		}
		if (takeover_fetch(cfg->takeover_socket, &ctl.takeover_conn, &inherited, &ninherited, &old_pid) < 0)
			goto err_log;
	} else if (cfg->takeover_socket) {
		/* Bound before anything listens: a second tusk on the same ports is refused here. */
		ctl.takeover_fd = takeover_listen(cfg->takeover_socket);
		if (ctl.takeover_fd < 0) {
			log_error(NULL, NULL, "takeover_socket %s: %s", cfg->takeover_socket,
				  ctl.takeover_fd == -EADDRINUSE ? "another tusk answers there; start with --takeover to replace it"
								 : strerror(-ctl.takeover_fd));
			goto err_log;
		}
	}
	if (cfg->pidfile) {
		int other, prc = pidfile_write(cfg->pidfile, takeover, &other);
		if (prc == -EEXIST) {
			log_error(NULL, NULL, "pidfile %s: tusk is already running with pid %d", cfg->pidfile, other);
			goto err_takeover;
		}
		if (prc < 0) {
			log_error(NULL, NULL, "pidfile %s: %s", cfg->pidfile, strerror(-prc));
			goto err_takeover;
		}
		snprintf(pid_path, sizeof pid_path, "%s", cfg->pidfile);
	}
	char takeover_path[128] = "";
	if (cfg->takeover_socket)
		snprintf(takeover_path, sizeof takeover_path, "%s", cfg->takeover_socket);
	if (cfg->admin.http)
		(void)metrics_load_library(); /* before listening: see metrics.h */
	int rc = daemon_start(&ctl.rt, cfg, inherited, ninherited);
	cfg = NULL; /* the runtime's now */
	free(inherited);
	if (rc < 0)
		goto err_takeover;
	/* After the listeners are open (/health means tusk listens), before anything stops. */
	if (metrics_start(&ctl.rt, &ctl.http) < 0) {
		daemon_stop(&ctl.rt);
		goto err_takeover;
	}
	start_kv(&ctl.rt);
	log_info(NULL, NULL, "tusk %s started (config %s)", TUSK_VERSION, path);
	if (takeover)
		takeover_serving(&ctl, old_pid);
	(void)sdnotify("READY=1\nSTATUS=serving");
	rc = control_loop(&ctl);
	stop_serving(&ctl);
	if (ctl.takeover_fd >= 0)
		close(ctl.takeover_fd);
	if (ctl.successor >= 0)
		close(ctl.successor);
	if (pid_path[0])
		pidfile_remove(pid_path);
	log_info(NULL, NULL, "stopped");
	log_shutdown();
	close(sigfd);
	return rc;

err_takeover:
	if (pid_path[0])
		pidfile_remove(pid_path);
	if (ctl.takeover_conn >= 0)
		close(ctl.takeover_conn);
	if (ctl.takeover_fd >= 0) {
		close(ctl.takeover_fd);
		(void)unlink(takeover_path); /* ours: takeover_listen bound it */
	}
err_log:
	log_shutdown();
	config_free(cfg);
	close(sigfd);
	return 1;
}
