/* Client authentication rules: a pg_hba.conf subset (local/host/hostssl/hostnossl, database and
 * user lists with the database keywords all, sameuser and replication, CIDR or
 * address+netmask, eight methods; options: map=NAME on cert and peer lines, a user name map
 * of ident_file, auth/ident.h, PostgreSQL's ldap* options on ldap lines,
 * config/ldap_options.h, pamservice and pam_use_hostname on pam lines, and clientcert= and
 * clientname= on hostssl lines). Loaded once into an immutable rule list; the first line that
 * matches a connection decides its method. */
#ifndef TUSK_AUTH_HBA_H
#define TUSK_AUTH_HBA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/config.h" /* enum config_auth */
#include "net/net.h"

enum hba_conn { HBA_LOCAL, HBA_HOST_PLAIN, HBA_HOST_TLS };
enum hba_method { HBA_TRUST, HBA_REJECT, HBA_PASSWORD, HBA_MD5, HBA_SCRAM, HBA_CERT, HBA_PEER, HBA_LDAP, HBA_PAM };
/* A hostssl line's clientcert= (PostgreSQL's): a client certificate the listener's CA verified
 * is demanded before the method runs (verify-ca), and after it succeeded its name must be
 * the user's (verify-full; the cert method always). */
enum hba_clientcert { HBA_CLIENTCERT_OFF, HBA_CLIENTCERT_CA, HBA_CLIENTCERT_FULL };

#define HBA_PAM_SERVICE_MAX 128 /* a pamservice, NUL included (auth/pamauth.h's PAMAUTH_SERVICE_MAX) */
#define HBA_PAM_SERVICE_DEFAULT "postgresql" /* PostgreSQL's */

/* A pam line's options (PostgreSQL's). */
struct hba_pam {
	char service[HBA_PAM_SERVICE_MAX]; /* pamservice: /etc/pam.d/<service>; default postgresql */
	bool use_hostname;                 /* pam_use_hostname=1: PAM_RHOST the client's host name */
};

struct config_ldap;
struct hba; /* opaque, immutable after load: safe to share between threads */
struct ident;

/* Parse the file at path. 0 and *out, or the number of errors (*out untouched), each written to
 * errout (NULL: not written) as "FILE:LINE: hba: message"; every bad line is reported, not just
 * the first. A file that cannot be read is one error, "FILE: hba: ...". ident is ident_file
 * (NULL: none), which every map=NAME must name a map of; the hba keeps a pointer to it, so
 * ident must outlive it (a configuration generation holds both until exit). */
__attribute__((warn_unused_result))
int hba_load(const char *path, const struct ident *ident, FILE *errout, struct hba **out);

/* The same over bytes in memory; name stands for FILE in messages. Bytes need not be
 * NUL-terminated; a NUL byte inside a line is an error. */
__attribute__((warn_unused_result))
int hba_load_buffer(const char *name, const char *data, size_t len, const struct ident *ident, FILE *errout,
		    struct hba **out);

void hba_free(struct hba *h);

/* What the first matching line says, filled in by hba_match: everything a login needs of it, so
 * that nothing looks the line up again. Pointers are valid as long as the hba. */
struct hba_hit {
	enum hba_method method;
	int line;                       /* its line number in the file (1-based) */
	const char *map;                /* map=NAME (cert and peer lines), or NULL */
	const struct config_ldap *ldap; /* the ldap method's options, else NULL */
	const struct hba_pam *pam;      /* the pam method's options, else NULL */
	enum hba_clientcert clientcert; /* HBA_CLIENTCERT_FULL on cert lines */
	bool clientname_dn;             /* clientname=DN: the certificate's whole subject is the name */
};

#define HBA_NAME_MAX 256 /* a host name, NUL included (a DNS name has at most 253 bytes) */

/* The client's host name, as hba_file's host-name lines need it (PostgreSQL's check_hostname):
 * the name its address has (reverse lookup), and whether that name's addresses hold the
 * client's (the forward check). A host-name line matches only a verified name. */
struct hba_peer_name {
	bool verified;
	char name[HBA_NAME_MAX]; /* "": the address has no name */
};

/* No name: what a client whose lookup was not done (or could not be) is matched with. */
extern const struct hba_peer_name hba_no_name;

enum hba_result {
	HBA_NO_MATCH = 0, /* the caller refuses with 28000; *hit untouched */
	HBA_MATCH = 1,    /* *hit says what the line does */
	HBA_NEED_NAME = 2, /* pn was NULL and the first line that otherwise matches names a host:
			    * look the name up (hba_peer_name_lookup) and ask again with it */
};

/* First matching line. addr is NULL for HBA_LOCAL; a NULL addr on a host connection matches
 * only lines whose address is "all". pn: the client's name once looked up, NULL before (a
 * line naming a host is never matched without it).
 *
 * Address families: an IPv4 line (10.0.0.0/8, or address and netmask) matches IPv4 peers and
 * IPv4-mapped IPv6 peers (::ffff:10.1.2.3) on their embedded IPv4 address, because a dual-stack
 * listener on "::" sees IPv4 clients that way. PostgreSQL itself compares same-family only;
 * tusk's rule is the one an administrator writing 10.0.0.0/8 expects. An IPv6 line matches IPv6
 * peers only, mapped ones included on their full 128 bits (so ::ffff:0:0/96 matches every
 * mapped peer); it never matches a plain AF_INET peer. A host-name line (PostgreSQL's: the name,
 * or ".example.com" for any name ending so, case-insensitively) matches the verified name. */
__attribute__((warn_unused_result))
enum hba_result hba_match(const struct hba *h, enum hba_conn conn, const char *database, const char *user,
			  const struct net_addr *addr, const struct hba_peer_name *pn, struct hba_hit *hit);

/* hba_match for a physical replication connection (startup parameter replication=true): only
 * lines whose database field holds the keyword "replication" match it, as in PostgreSQL
 * (that keyword matches nothing else; a logical one, replication=database, goes through
 * hba_match with its database). */
__attribute__((warn_unused_result))
enum hba_result hba_match_physical(const struct hba *h, enum hba_conn conn, const char *user,
				   const struct net_addr *addr, const struct hba_peer_name *pn, struct hba_hit *hit);

/* Whether a line names a host (so that a login may need hba_peer_name_lookup). NULL: false. */
bool hba_has_names(const struct hba *h);

/* Blocking (DNS: threads of their own, never a worker's loop): PostgreSQL's lookup of addr's
 * name (getnameinfo, a name required) and the forward check (getaddrinfo of that name, in the
 * client's family: an IPv4-mapped address as IPv4). */
void hba_peer_name_lookup(const struct net_addr *addr, struct hba_peer_name *out);

/* Whether a cert or peer login of system_user (the certificate's CN, the SO_PEERCRED user) may
 * be user under the matched line's map: with no map, when the two names are equal (PostgreSQL's
 * cert and peer without map=); with one, when a line of that map of ident_file admits it (*line
 * its line number in ident_file; 0 without a map). */
bool hba_map_admits(const struct hba *h, const char *map, const char *system_user, const char *user, int *line);

/* "trust", "reject", "password", "md5", "scram-sha-256", "cert", "peer", "ldap", "pam"; "?" for
 * anything else. */
const char *hba_method_name(enum hba_method m);

/* The matched line's method as a pool rule's client_auth says it (the two enums name the same
 * methods), for the code that runs either. */
enum config_auth hba_config_auth(enum hba_method m);

/* Number of rules loaded (for logs and tests). */
int hba_count(const struct hba *h);

#endif
