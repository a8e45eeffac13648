/* tusk: wires configuration, logging, the runtime and signals together. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/hba.h"
#include "auth/userlist.h"
#include "config/config.h"
#include "metrics/metrics.h"
#include "runtime/runtime.h"
#include "util/log.h"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: tusk [-c FILE] [--check] [--version] [--help]\n"
		"  -c, --config FILE  configuration file (default ./tusk.yaml)\n"
		"      --check        validate the configuration and exit (0 = valid)\n"
		"  -V, --version      print the version and exit\n"
		"  -h, --help         print this help and exit\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = "tusk.yaml";
	bool check = false;
	int opt;

	while ((opt = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'k': check = true; break;
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
	if (check) {
		struct userlist *users;
		struct hba *hba;
		int aerr = runtime_load_auth(cfg, stderr, &users, &hba);
		userlist_free(users);
		hba_free(hba);
		if (aerr > 0) {
			fprintf(stderr, "%s: %d error%s in auth_file/hba_file; tusk not started\n", path, aerr, aerr == 1 ? "" : "s");
			config_free(cfg);
			return 1;
		}
		printf("%s: configuration is valid\n", path);
		config_free(cfg);
		return 0;
	}

	/* Signals are taken synchronously by this thread; workers block them all. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (log_init(cfg->log.level, cfg->log.format, cfg->log.target) < 0) {
		fprintf(stderr, "tusk: cannot open log target %s\n", cfg->log.target);
		config_free(cfg);
		return 1;
	}
	struct runtime rt;
	int rc = runtime_start(&rt, cfg);
	if (rc < 0) {
		log_shutdown();
		config_free(cfg);
		return 1;
	}
	/* After the listeners are open (/health means tusk listens), before anything stops. */
	struct metrics_http *http = NULL;
	if (metrics_start(&rt, &http) < 0) {
		runtime_stop(&rt);
		log_shutdown();
		config_free(cfg);
		return 1;
	}
	log_info(NULL, NULL, "tusk %s started (config %s)", TUSK_VERSION, path);

	for (;;) {
		int sig = 0;
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_info(NULL, NULL, "SIGHUP: reload is not supported yet; ignoring");
			continue;
		}
		log_info(NULL, NULL, "%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
		break;
	}
	metrics_stop(http); /* its handlers read what runtime_stop frees */
	runtime_stop(&rt);
	log_info(NULL, NULL, "stopped");
	log_shutdown();
	config_free(cfg);
	return 0;
}
