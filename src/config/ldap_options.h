/* The options of LDAP client authentication, PostgreSQL's (hba_file's ldap lines, and the
 * ldap_options string of client_auth: ldap, PgBouncer's auth_ldap_options): each NAME=VALUE
 * checked as it comes (config_ldap_set), the whole set checked once at its end
 * (config_ldap_finish), an ldapurl taken apart into the options it stands for. Pure: no I/O,
 * no allocation; auth/ldapauth.c runs the check the options describe. */
#ifndef TUSK_CONFIG_LDAP_OPTIONS_H
#define TUSK_CONFIG_LDAP_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

#define CONFIG_LDAP_STR_MAX 512 /* any one option's value, NUL included */
#define CONFIG_LDAP_ATTR_MAX 128

enum config_ldap_scope { CONFIG_LDAP_SCOPE_BASE, CONFIG_LDAP_SCOPE_ONE, CONFIG_LDAP_SCOPE_SUB };

/* Plain values, no pointers: copied whole into a check handed to another thread. */
struct config_ldap {
	bool ldaps;     /* ldapscheme=ldaps (or an ldaps:// ldapurl) */
	bool starttls;  /* ldaptls=1 */
	bool search;    /* search+bind (ldapbasedn); else simple bind (ldapprefix/ldapsuffix) */
	int port;       /* 0: the scheme's (389, 636) */
	int scope;      /* enum config_ldap_scope; search+bind only, default sub */
	unsigned given; /* which options were written (private: config_ldap_finish's checks) */
	char server[CONFIG_LDAP_STR_MAX]; /* host names, space-separated, tried in turn */
	char prefix[CONFIG_LDAP_STR_MAX];
	char suffix[CONFIG_LDAP_STR_MAX];
	char basedn[CONFIG_LDAP_STR_MAX];
	char binddn[CONFIG_LDAP_STR_MAX];
	char bindpasswd[CONFIG_LDAP_STR_MAX];
	char searchattribute[CONFIG_LDAP_ATTR_MAX];
	char searchfilter[CONFIG_LDAP_STR_MAX];
};

/* Start o empty (before the first config_ldap_set). */
void config_ldap_init(struct config_ldap *o);
/* One option NAME=VALUE into o, its name the nlen bytes at name (need not end there). 0, or
 * -EINVAL with what is wrong in err (an unknown name, a bad value, an option given twice, a
 * value too long, an ldapurl that does not parse). */
__attribute__((warn_unused_result))
int config_ldap_set(struct config_ldap *o, const char *name, size_t nlen, const char *value, char *err,
		    size_t errlen);
/* After the last option: the set must name a server and one mode (ldapprefix/ldapsuffix, or
 * ldapbasedn), not both, and not ldapsearchattribute with ldapsearchfilter. 0 or -EINVAL. */
__attribute__((warn_unused_result))
int config_ldap_finish(struct config_ldap *o, char *err, size_t errlen);
/* A whole option string, NAME=VALUE separated by blanks, a value in double quotes may hold
 * blanks (and "" a quote), as PgBouncer's auth_ldap_options: init, set each, finish. */
__attribute__((warn_unused_result))
int config_ldap_parse(const char *s, struct config_ldap *o, char *err, size_t errlen);

#endif
