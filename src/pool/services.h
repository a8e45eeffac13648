/* Services: where each service's backends are, fed to every pool that uses it. One resolver
 * (src/resolve/) per service, started at start and kept across reloads while the service's
 * discovery keys stay the same (a reload asks it again at once); its answers go to each
 * subscribed pool core with tp_pool_set_backends, and the last set is given to a pool that
 * subscribes later. The console and tusk's own connections (auth_query, the health probe)
 * read the current set. */
#ifndef TUSK_POOL_SERVICES_H
#define TUSK_POOL_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "net/net.h"
#include "resolve/resolve.h"
#include "tuskpool.h"

struct services;

struct services *services_new(void);
/* Stop every resolver: no callback runs after this returns (the sets stay readable). First
 * in a shutdown, while workers may still read the sets. NULL is a no-op. */
void services_stop(struct services *s);
/* Stop what still runs and free everything, once no worker runs any more and before the pool
 * cores are destroyed. NULL is a no-op. */
void services_free(struct services *s);

/* Main thread, at start and at each reload, before cfg is published: a resolver for each
 * service of cfg (an existing one with the same discovery keys is kept and asked again now;
 * one whose keys changed is stopped and replaced). A static service whose hosts are all
 * numeric has its set at once, so the first claims need not wait for the resolver thread.
 * 0 or a negative errno (the reload then fails; resolvers started for it stay unused). */
__attribute__((warn_unused_result))
int services_apply(struct services *s, const struct tusk_config *cfg);

/* A backend's role, as its server says (in_hot_standby at login and when it changes). */
enum services_role { SERVICES_ROLE_UNKNOWN, SERVICES_ROLE_PRIMARY, SERVICES_ROLE_STANDBY };

/* tp gets svc's backends from now on: the current set at once (if any), then every change,
 * only those that may fit target (enum config_target; see services_role_fits). svc is a
 * service of any live generation. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int services_subscribe(struct services *s, const struct config_service *svc, struct tp_pool *tp, int target);

/* May a pool with target (enum config_target) use a server of role? Unknown fits all. */
bool services_role_fits(int target, enum services_role role);
/* A server of be (a backend of svc) reported role (any thread): a change re-feeds the pools
 * of svc, so that pools wanting a primary drop a standby and take a promoted one. */
void services_note_role(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be,
			enum services_role role);
enum services_role services_role_of(struct services *s, const struct config_service *svc,
				    const struct tp_backend_addr *be);
const char *services_role_name(enum services_role role);
/* The name TLS verifies (and sends as SNI) for svc's backend be, the backend being a
 * numeric address (name and port): the static host it was resolved from, as libpq verifies each host of a
 * multi-host string against its own name (the first host when the backend is not in the
 * set); the dns name; for SRV, the SRV name. */
void services_tls_name(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be,
		       char *out, size_t cap);
/* Is any backend of svc known to be a standby? (prefer-standby takes a primary only if not.) */
bool services_has_standby(struct services *s, const struct config_service *svc);
/* read-your-writes: a standby's replay position (pg_last_wal_replay_lsn(), as seen by a
 * server of be; kept only if it moved forward) and the last one seen (0: never). Any thread. */
void services_note_replay(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be,
			  uint64_t lsn);
uint64_t services_replay_of(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be);
/* A server of be refused a write as read-only (25006) though its pool took it for a primary:
 * the role is unknown again, so every pool is offered be and its next connect re-checks. */
void services_forget_role(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be);
/* Whether any backend of svc is a standby or of unknown role (read-write-split: else every
 * transaction goes to the primary side). */
bool services_may_have_standby(struct services *s, const struct config_service *svc);
/* The services' own ticker thread runs it every 100 ms (tests may call it): each pool is
 * given its part of its service's set again when that part changed (role verdicts older
 * than a second are offered again to the pools they excluded, so that the next connect
 * there re-checks the role; every backend to a pool looking for a primary), and the queue
 * of a pool looking for a primary is worked. */
void services_tick(struct services *s);
/* A connect of a pool to be failed (the backend is down) / logged in. */
void services_note_down(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be);
void services_note_up(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be);
/* Every backend of svc that may be a primary is down and some standby is known: a failover
 * may be under way (a read-write-split login goes to a standby meanwhile). */
bool services_primary_down(struct services *s, const struct config_service *svc);

/* An address of svc now (the first of its current set), for tusk's own one-off connections.
 * 0, or -EHOSTUNREACH when none is known yet. */
__attribute__((warn_unused_result))
int services_addr(struct services *s, const struct config_service *svc, struct net_addr *out);
/* The address of svc's primary for a connection of tusk's own that must reach it (the LISTEN
 * connection: NOTIFYs happen only there): the first backend known to be a primary, else the
 * first not known to be a standby; be (if not NULL) names it. 0, or -EHOSTUNREACH when none
 * is known yet or every backend is a standby (a failover under way). */
__attribute__((warn_unused_result))
int services_primary_addr(struct services *s, const struct config_service *svc, struct net_addr *out,
			  struct tp_backend_addr *be);

/* The next backend of svc, none of tried, for a connection of tusk's own that must reach the
 * primary (or, standby_first, a standby) and tries them one after the other until one is (a
 * replication connection, frontend/replication.c). In this order: the role wanted and not
 * down, of unknown role and not down, the role wanted but down, unknown and down, and last the
 * other role (a role noted before a failover may have changed). 0, or -EHOSTUNREACH when
 * every backend was tried. */
__attribute__((warn_unused_result))
int services_candidate(struct services *s, const struct config_service *svc, bool standby_first,
		       const struct tp_backend_addr *tried, int ntried, struct net_addr *out, struct tp_backend_addr *be);

/* Would resolvers for a and b (services of any generations) find the same backends? A pool
 * whose service changed this way is retired by a reload, as its resolver is replaced. */
bool services_same_discovery(const struct config_service *a, const struct config_service *b);

/* The console's view: for the i-th service (of the newest apply; false past the end), its
 * name, its resolver's state and up to cap backends of its current set. */
bool services_view(struct services *s, int i, char *name, size_t namecap, struct resolve_state *st,
		   struct tp_backend_addr *addrs, uint32_t *weights, int cap, int *n);

#endif
