/* pg_hba.conf subset: each line tokenized the way PostgreSQL does (conftok.c), checked, and kept
 * in a flat array of rules for first-match lookup. Owns the rule array and its names. */
#include "auth/hba.h"
#include "auth/conftok.h"
#include "auth/ident.h"
#include "config/ldap_options.h"
#include "util/file.h"
#include "util/grow.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HBA_FILE_MAX (64u << 20) /* a bigger file is a mistake, not a rule set */
#define HBA_INCLUDE_DEPTH 10     /* @file inside @file, as deep as PostgreSQL 16 allows */
#define HBA_INCLUDES_MAX 1000    /* @files read in one load: a file that names itself many
				  * times over would otherwise be read exponentially often */

/* hostgssenc lines never match (tusk answers N to GSSENCRequest: no connection is
 * GSSAPI-encrypted), and hostnogssenc lines are host lines (every TCP connection is not). */
enum hba_type { HBA_TYPE_LOCAL, HBA_TYPE_HOST, HBA_TYPE_HOSTSSL, HBA_TYPE_HOSTNOSSL, HBA_TYPE_HOSTGSSENC };

/* HBA_NAME_REPLICATION: the database keyword "replication", which matches physical replication
 * connections and only them (as in PostgreSQL: "all" does not match those, "replication" no
 * other connection; a database named replication is written quoted). */
enum hba_name_kind { HBA_NAME_LITERAL, HBA_NAME_ALL, HBA_NAME_SAMEUSER, HBA_NAME_REPLICATION };

struct hba_name {
	enum hba_name_kind kind;
	char *name; /* HBA_NAME_LITERAL only */
};

struct hba_list {
	size_t cap; /* bytes of v (grow_bytes) */
	struct hba_name *v;
	int n;
};

struct hba_rule {
	int line;
	enum hba_type type;
	struct hba_list databases;
	struct hba_list users;
	bool addr_all;  /* "all", or a local line */
	uint8_t same;   /* SAME_HOST, SAME_NET: PostgreSQL's samehost and samenet */
	char *hostname; /* a host name (".suffix": any name that ends so), or NULL */
	int family;     /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* already masked */
	uint8_t mask[16];
	enum hba_method method;
	char *map;      /* map=NAME (cert and peer), or NULL */
	struct config_ldap *ldap; /* the ldap method's options, or NULL */
	enum hba_clientcert clientcert;
	bool clientname_dn; /* clientname=DN */
	struct hba_pam *pam;      /* the pam method's options, or NULL */
};

struct hba {
	struct hba_rule *rules;
	int n;
	size_t cap; /* bytes of rules (grow_bytes) */
	const struct ident *ident; /* ident_file, or NULL; not owned (see hba_load) */
	bool names;   /* a line's address is a host name */
	char *dir;    /* while loading: the directory @file names are read from (NULL: none) */
	int includes; /* while loading: @files read */
};

static void free_list(struct hba_list *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* Where @file names are read from: the directory of the file that names them (NULL for an
 * hba_file given as bytes, which may not name files), and the count of files read so far. */
struct hba_inc {
	const char *dir;
	int *count;
};

static int add_names(struct util_file_report *c, const struct conftok_tok *t, bool is_db, struct hba_list *out,
		     const struct hba_inc *inc, int depth);

/* One line of an @file: each of its tokens a name (whitespace or commas between them). */
struct inc_line_arg {
	bool is_db;
	struct hba_list *out;
	const struct hba_inc *inc;
	int depth;
};

static int inc_line(void *arg, struct util_file_report *c, const struct conftok_line *l)
{
	struct inc_line_arg *a = arg;
	for (int k = 0; k < l->ntoks; k++) {
		int rc = add_names(c, &l->toks[k], a->is_db, a->out, a->inc, a->depth);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* PostgreSQL's @file in a database or user field: the names of the file (relative to the
 * directory of the file naming it), read as lists of names; an @file inside it too, down to
 * HBA_INCLUDE_DEPTH. Errors in it are reported with its own name and line. */
static int include_names(struct util_file_report *c, const char *file, bool is_db, struct hba_list *out,
			 const struct hba_inc *inc, int depth)
{
	char path[4096];
	struct stat st;
	char *data;
	size_t len;

	if (!inc->dir) {
		util_file_report(c, "file inclusion \"@%s\" needs hba_file on disk", file);
		return -EINVAL;
	}
	if (depth >= HBA_INCLUDE_DEPTH || ++*inc->count > HBA_INCLUDES_MAX) {
		util_file_report(c, "could not open file \"%s\": %s", file,
				 depth >= HBA_INCLUDE_DEPTH ? "maximum nesting depth exceeded" : "too many files included");
		return -EINVAL;
	}
	int n = file[0] == '/' ? snprintf(path, sizeof path, "%s", file) : snprintf(path, sizeof path, "%s/%s", inc->dir, file);
	if (!file[0] || n < 0 || (size_t)n >= sizeof path) {
		util_file_report(c, "invalid file name in \"@%s\"", file);
		return -EINVAL;
	}
	/* A regular file only: a FIFO or a device would hold the load (the start, or a reload). */
	int rc = stat(path, &st) < 0 ? -errno : !S_ISREG(st.st_mode) ? -EINVAL : util_read_file(path, HBA_FILE_MAX, false, &data, &len);
	if (rc < 0) {
		util_file_report(c, "could not open secondary authentication file \"@%s\" as \"%s\": %s", file, path,
				 rc == -EINVAL ? "not a regular file" : strerror(-rc));
		return -EINVAL;
	}
	char *dir = strdup(path);
	if (!dir) {
		free(data);
		return -ENOMEM;
	}
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	struct hba_inc sub = { slash ? dir : ".", inc->count };
	struct util_file_report ic = { .name = path, .what = "hba", .errout = c->errout };
	struct inc_line_arg a = { is_db, out, &sub, depth + 1 };
	conftok_parse(&ic, data, len, inc_line, &a);
	free(data);
	free(dir);
	if (ic.nerr) {
		util_file_report(c, "%d error%s in \"@%s\"", ic.nerr, ic.nerr == 1 ? "" : "s", file);
		return -EINVAL;
	}
	return 0;
}

/* Token t of a database (is_db) or user field into out: a keyword, a name, or an @file's
 * names. 0, -ENOMEM, or -EINVAL after reporting. */
static int add_names(struct util_file_report *c, const struct conftok_tok *t, bool is_db, struct hba_list *out,
		     const struct hba_inc *inc, int depth)
{
	const char *what = is_db ? "database" : "user";

	if (!t->quoted && t->text[0] == '@')
		return include_names(c, t->text + 1, is_db, out, inc, depth);
	struct hba_name *v = grow_bytes(out->v, &out->cap, (size_t)(out->n + 1) * sizeof(*v), 8 * sizeof(*v));
	if (!v)
		return -ENOMEM;
	out->v = v;
	struct hba_name *nm = &out->v[out->n];
	nm->name = NULL;
	if (conftok_is(t, "all")) {
		nm->kind = HBA_NAME_ALL;
	} else if (is_db && conftok_is(t, "sameuser")) {
		nm->kind = HBA_NAME_SAMEUSER;
	} else if (is_db && conftok_is(t, "replication")) {
		nm->kind = HBA_NAME_REPLICATION;
	} else if (!t->quoted && (strcmp(t->text, "sameuser") == 0 || strcmp(t->text, "samerole") == 0 ||
				  strcmp(t->text, "samegroup") == 0 || strcmp(t->text, "replication") == 0)) {
		util_file_report(c, "%s keyword \"%s\" is not supported%s", what, t->text,
				 strcmp(t->text, "sameuser") == 0 ? " in the user field" : "");
		return -EINVAL;
	} else if (!t->quoted && t->text[0] == '+') {
		util_file_report(c, "group membership \"%s\" is not supported (write the user names)", t->text);
		return -EINVAL;
	} else if (t->text[0] == '\0') {
		util_file_report(c, "empty %s name", what);
		return -EINVAL;
	} else {
		nm->kind = HBA_NAME_LITERAL;
		nm->name = strdup(t->text);
		if (!nm->name)
			return -ENOMEM;
	}
	out->n++;
	return 0;
}

/* Database (is_db) or user list from field f. 0, -ENOMEM, or -EINVAL after reporting. */
static int parse_list(struct util_file_report *c, const struct conftok_line *l, int f, bool is_db,
		      const struct hba_inc *inc, struct hba_list *out)
{
	const struct conftok_field *fld = &l->fields[f];

	*out = (struct hba_list){ 0 };
	for (int k = 0; k < fld->n; k++) {
		int rc = add_names(c, &l->toks[fld->first + k], is_db, out, inc, 0);
		if (rc < 0) {
			free_list(out);
			return rc;
		}
	}
	return 0;
}

static int parse_method(const char *s, enum hba_method *m)
{
	static const enum hba_method all[] = { HBA_TRUST, HBA_REJECT, HBA_PASSWORD, HBA_MD5, HBA_SCRAM,
					       HBA_CERT,  HBA_PEER,   HBA_LDAP,     HBA_PAM };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(s, hba_method_name(all[i])) == 0) {
			*m = all[i];
			return 0;
		}
	}
	return -EINVAL;
}

/* A numeric address into 16 bytes (IPv4 in the first 4). Family or 0. */
static int parse_ip(const char *s, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET, s, out) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, s, out) == 1)
		return AF_INET6;
	return 0;
}

static int parse_prefix(const char *s, int max)
{
	int v = 0;
	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > max)
			return -1;
	}
	return v;
}

static void prefix_mask(int bits, uint8_t mask[16])
{
	memset(mask, 0, 16);
	for (int i = 0; i < bits / 8; i++)
		mask[i] = 0xff;
	if (bits % 8)
		mask[bits / 8] = (uint8_t)(0xff00 >> (bits % 8));
}

enum { SAME_HOST = 1, SAME_NET };

/* A host name of an address field: letters, digits, '-', '_' and '.', at least one letter (so
 * that a mistyped address stays an error), shorter than HBA_NAME_MAX. */
static bool is_host_name(const char *s, size_t n)
{
	bool letter = false;
	if (n == 0 || n >= HBA_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
			letter = true;
		else if (!(ch >= '0' && ch <= '9') && ch != '-' && ch != '_' && ch != '.')
			return false;
	}
	return letter;
}


/* The address (and maybe netmask) starting at field f: the index of the field after it, or
 * -EINVAL after reporting. */
static int parse_address(struct util_file_report *c, const struct conftok_line *l, int f, struct hba_rule *r)
{
	const struct conftok_tok *t = &l->toks[l->fields[f].first];
	char buf[64];

	if (l->fields[f].n > 1) {
		util_file_report(c, "the address must be a single value, not a list");
		return -EINVAL;
	}
	if (conftok_is(t, "all")) {
		r->addr_all = true;
		return f + 1;
	}
	if (conftok_is(t, "samehost") || conftok_is(t, "samenet")) {
		r->same = conftok_is(t, "samehost") ? SAME_HOST : SAME_NET;
		return f + 1;
	}
	const char *slash = strchr(t->text, '/');
	if (is_host_name(t->text, strlen(t->text))) { /* PostgreSQL's: no netmask field after it */
		if (!(r->hostname = strdup(t->text)))
			return -ENOMEM;
		return f + 1;
	}
	if (slash && is_host_name(t->text, (size_t)(slash - t->text))) {
		util_file_report(c, "specifying both host name and CIDR mask is invalid: \"%s\"", t->text);
		return -EINVAL;
	}
	size_t alen = slash ? (size_t)(slash - t->text) : strlen(t->text);
	if (alen >= sizeof(buf)) {
		util_file_report(c, "invalid IP address \"%s\"", t->text);
		return -EINVAL;
	}
	memcpy(buf, t->text, alen);
	buf[alen] = '\0';
	r->family = parse_ip(buf, r->addr);
	if (!r->family) {
		util_file_report(c, "invalid IP address \"%s\"", t->text);
		return -EINVAL;
	}
	int max = r->family == AF_INET ? 32 : 128;
	if (slash) {
		int bits = parse_prefix(slash + 1, max);
		if (bits < 0) {
			util_file_report(c, "invalid CIDR mask in address \"%s\" (0..%d)", t->text, max);
			return -EINVAL;
		}
		prefix_mask(bits, r->mask);
		f++;
	} else {
		/* "ADDRESS NETMASK": the netmask is the next field. */
		if (f + 1 >= l->nfields) {
			util_file_report(c, "end of line before the netmask of \"%s\"", t->text);
			return -EINVAL;
		}
		const struct conftok_tok *m = &l->toks[l->fields[f + 1].first];
		if (l->fields[f + 1].n > 1 || parse_ip(m->text, r->mask) != r->family) {
			util_file_report(c, "invalid IP mask \"%s\" for address \"%s\"", m->text, t->text);
			return -EINVAL;
		}
		f += 2;
	}
	for (int i = 0; i < 16; i++)
		r->addr[i] &= r->mask[i];
	return f;
}

/* clientcert=verify-ca|verify-full and clientname=CN|DN, on any method's hostssl line, with
 * PostgreSQL's words for what it refuses: 1 when t was one of them, 0 when it is another
 * option, -EINVAL after reporting. */
static int parse_cert_option(struct util_file_report *c, const struct conftok_tok *t, const char *eq,
			     struct hba_rule *r)
{
	size_t n = (size_t)(eq - t->text);
	const char *v = eq + 1;
	bool cert = n == 10 && strncmp(t->text, "clientcert", n) == 0;

	if (!cert && !(n == 10 && strncmp(t->text, "clientname", n) == 0))
		return 0;
	if (r->type != HBA_TYPE_HOSTSSL) {
		util_file_report(c, "%s can only be configured for \"hostssl\" rows", cert ? "clientcert" : "clientname");
		return -EINVAL;
	}
	if (!cert) {
		if (strcmp(v, "CN") != 0 && strcmp(v, "DN") != 0) {
			util_file_report(c, "invalid value for clientname: \"%s\"", v);
			return -EINVAL;
		}
		r->clientname_dn = v[0] == 'D';
	} else if (strcmp(v, "verify-full") == 0) {
		r->clientcert = HBA_CLIENTCERT_FULL;
	} else if (strcmp(v, "verify-ca") == 0) {
		if (r->method == HBA_CERT) {
			util_file_report(c, "clientcert only accepts \"verify-full\" when using \"cert\" authentication");
			return -EINVAL;
		}
		r->clientcert = HBA_CLIENTCERT_CA;
	} else {
		util_file_report(c, "invalid value for clientcert: \"%s\"", v);
		return -EINVAL;
	}
	return 1;
}

/* The option NAME=VALUE of field o (after the method): map=NAME, on cert and peer lines,
 * naming a map of ident, or clientcert= and clientname= (parse_cert_option). 0, -ENOMEM, or
 * -EINVAL after reporting. */
static int parse_option(struct util_file_report *c, const struct conftok_line *l, int o, const struct ident *ident,
			struct hba_rule *r)
{
	const struct conftok_tok *t = &l->toks[l->fields[o].first];
	const char *eq = strchr(t->text, '=');
	int rc;

	if (!eq) {
		util_file_report(c, "unexpected field \"%s\" after the authentication method", t->text);
		return -EINVAL;
	}
	if ((rc = parse_cert_option(c, t, eq, r)) != 0)
		return rc < 0 ? rc : 0;
	if (eq - t->text != 3 || strncmp(t->text, "map", 3) != 0) {
		util_file_report(c, "authentication option \"%s\" is not supported", t->text);
		return -EINVAL;
	}
	if (l->fields[o].n > 1) {
		util_file_report(c, "the map name must be a single value, not a list");
		return -EINVAL;
	}
	if (r->method != HBA_CERT && r->method != HBA_PEER) {
		util_file_report(c, "authentication option \"map\" is only valid for the cert and peer methods");
		return -EINVAL;
	}
	if (r->map) {
		util_file_report(c, "authentication option \"map\" given twice");
		return -EINVAL;
	}
	if (eq[1] == '\0') {
		util_file_report(c, "empty user name map in \"%s\"", t->text);
		return -EINVAL;
	}
	if (!ident) {
		util_file_report(c, "user name map \"%s\" but no ident_file is set", eq + 1);
		return -EINVAL;
	}
	if (!ident_has_map(ident, eq + 1)) {
		util_file_report(c, "user name map \"%s\" is not in ident_file", eq + 1);
		return -EINVAL;
	}
	r->map = strdup(eq + 1);
	return r->map ? 0 : -ENOMEM;
}

/* The options of an ldap line, fields o.. (PostgreSQL's: each token NAME=VALUE, a value with
 * a comma or a blank quoted), into r->ldap, checked as a set at the end. 0, -ENOMEM, or
 * -EINVAL after reporting. */
static int parse_ldap_options(struct util_file_report *c, const struct conftok_line *l, int o, struct hba_rule *r)
{
	char err[256];

	r->ldap = malloc(sizeof *r->ldap);
	if (!r->ldap)
		return -ENOMEM;
	config_ldap_init(r->ldap);
	for (; o < l->nfields; o++) {
		for (int k = 0; k < l->fields[o].n; k++) {
			const struct conftok_tok *t = &l->toks[l->fields[o].first + k];
			const char *eq = strchr(t->text, '=');
			if (!eq) {
				util_file_report(c, "unexpected field \"%s\" after the authentication method", t->text);
				return -EINVAL;
			}
			int rc = parse_cert_option(c, t, eq, r);
			if (rc < 0)
				return rc;
			if (rc == 0 && config_ldap_set(r->ldap, t->text, (size_t)(eq - t->text), eq + 1, err, sizeof err) < 0) {
				util_file_report(c, "%s", err);
				return -EINVAL;
			}
		}
	}
	if (config_ldap_finish(r->ldap, err, sizeof err) < 0) {
		util_file_report(c, "%s", err);
		return -EINVAL;
	}
	return 0;
}

/* The options of a pam line, fields o.. (PostgreSQL's pamservice=NAME and pam_use_hostname=0|1,
 * and clientcert=/clientname= as on any hostssl line), into r->pam. 0, -ENOMEM, or -EINVAL after
 * reporting. */
static int parse_pam_options(struct util_file_report *c, const struct conftok_line *l, int o, struct hba_rule *r)
{
	bool service_given = false, hostname_given = false;

	r->pam = malloc(sizeof *r->pam);
	if (!r->pam)
		return -ENOMEM;
	snprintf(r->pam->service, sizeof r->pam->service, "%s", HBA_PAM_SERVICE_DEFAULT);
	r->pam->use_hostname = false;
	for (; o < l->nfields; o++) {
		const struct conftok_tok *t = &l->toks[l->fields[o].first];
		const char *eq = strchr(t->text, '=');
		if (!eq) {
			util_file_report(c, "unexpected field \"%s\" after the authentication method", t->text);
			return -EINVAL;
		}
		if (l->fields[o].n > 1) {
			util_file_report(c, "the value of \"%.*s\" must be a single value, not a list", (int)(eq - t->text),
					 t->text);
			return -EINVAL;
		}
		int rc = parse_cert_option(c, t, eq, r); /* clientcert=, clientname= on hostssl lines */
		if (rc < 0)
			return rc;
		if (rc == 1)
			continue;
		size_t nlen = (size_t)(eq - t->text);
		const char *v = eq + 1;
		if (nlen == 10 && strncmp(t->text, "pamservice", 10) == 0) {
			/* A file name under /etc/pam.d: no path, as libpam reads it. */
			if (service_given || !v[0] || strlen(v) >= sizeof r->pam->service || strchr(v, '/')) {
				util_file_report(c, service_given ? "authentication option \"pamservice\" given twice"
								  : "invalid pamservice \"%s\" (a file name of /etc/pam.d, "
								    "at most %d bytes)",
						 v, HBA_PAM_SERVICE_MAX - 1);
				return -EINVAL;
			}
			memcpy(r->pam->service, v, strlen(v) + 1);
			service_given = true;
		} else if (nlen == 16 && strncmp(t->text, "pam_use_hostname", 16) == 0) {
			if (hostname_given || (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)) {
				util_file_report(c, hostname_given ? "authentication option \"pam_use_hostname\" given twice"
								   : "invalid pam_use_hostname \"%s\" (0 or 1)",
						 v);
				return -EINVAL;
			}
			r->pam->use_hostname = v[0] == '1';
			hostname_given = true;
		} else {
			util_file_report(c, "authentication option \"%.*s\" is not supported for the pam method "
					    "(pamservice, pam_use_hostname)",
					 (int)nlen, t->text);
			return -EINVAL;
		}
	}
	return 0;
}

static void free_options(struct hba_rule *r)
{
	free(r->pam);
	r->pam = NULL;
	if (r->ldap) {
		explicit_bzero(r->ldap, sizeof *r->ldap); /* ldapbindpasswd */
		free(r->ldap);
		r->ldap = NULL;
	}
}

/* One tokenized, non-empty line into r. 0, -ENOMEM, or -EINVAL after reporting. */
static int parse_fields(struct util_file_report *c, const struct conftok_line *l, const struct ident *ident,
			const struct hba_inc *inc, struct hba_rule *r)
{
	const struct conftok_tok *t;
	int f, rc;

	memset(r, 0, sizeof(*r));
	r->line = c->line;
	t = &l->toks[0];
	if (l->fields[0].n > 1) {
		util_file_report(c, "the connection type must be a single value, not a list");
		return -EINVAL;
	}
	if (strcmp(t->text, "local") == 0)
		r->type = HBA_TYPE_LOCAL;
	else if (strcmp(t->text, "host") == 0)
		r->type = HBA_TYPE_HOST;
	else if (strcmp(t->text, "hostssl") == 0)
		r->type = HBA_TYPE_HOSTSSL;
	else if (strcmp(t->text, "hostnossl") == 0)
		r->type = HBA_TYPE_HOSTNOSSL;
	else if (strcmp(t->text, "hostgssenc") == 0)
		r->type = HBA_TYPE_HOSTGSSENC;
	else if (strcmp(t->text, "hostnogssenc") == 0)
		r->type = HBA_TYPE_HOST;
	else {
		util_file_report(c, "invalid connection type \"%s\" (local, host, hostssl, hostnossl, hostgssenc or hostnogssenc)",
				 t->text);
		return -EINVAL;
	}
	if (l->nfields < 2) {
		util_file_report(c, "end of line before the database field");
		return -EINVAL;
	}
	if (l->nfields < 3) {
		util_file_report(c, "end of line before the user field");
		return -EINVAL;
	}
	f = 3;
	if (r->type == HBA_TYPE_LOCAL) {
		r->addr_all = true;
	} else {
		if (l->nfields < 4) {
			util_file_report(c, "end of line before the address field");
			return -EINVAL;
		}
		f = parse_address(c, l, 3, r);
		if (f < 0)
			return f;
	}
	if (f >= l->nfields) {
		util_file_report(c, "end of line before the authentication method");
		return -EINVAL;
	}
	t = &l->toks[l->fields[f].first];
	if (l->fields[f].n > 1 || parse_method(t->text, &r->method) < 0) {
		util_file_report(c, "invalid authentication method \"%s\" (trust, reject, password, md5, scram-sha-256, cert, peer, ldap or pam)",
		       t->text);
		return -EINVAL;
	}
	if (r->method == HBA_CERT && r->type != HBA_TYPE_HOSTSSL) {
		util_file_report(c, "cert authentication is only supported on hostssl lines");
		return -EINVAL;
	}
	if (r->method == HBA_PEER && r->type != HBA_TYPE_LOCAL) {
		util_file_report(c, "peer authentication is only supported on local sockets");
		return -EINVAL;
	}
	if (r->method == HBA_CERT)
		r->clientcert = HBA_CLIENTCERT_FULL; /* PostgreSQL's: the cert method is verify-full */
	if (r->method == HBA_LDAP) {
		rc = parse_ldap_options(c, l, f + 1, r);
		if (rc < 0)
			goto err_free_map;
	} else if (r->method == HBA_PAM) {
		rc = parse_pam_options(c, l, f + 1, r);
		if (rc < 0)
			goto err_free_map;
	} else {
		for (int o = f + 1; o < l->nfields; o++) {
			rc = parse_option(c, l, o, ident, r);
			if (rc < 0)
				goto err_free_map;
		}
	}
	rc = parse_list(c, l, 1, true, inc, &r->databases);
	if (rc < 0)
		goto err_free_map;
	rc = parse_list(c, l, 2, false, inc, &r->users);
	if (rc < 0)
		goto err_free_databases;
	return 0;

err_free_databases:
	free_list(&r->databases);
err_free_map:
	free(r->map);
	r->map = NULL;
	free_options(r);
	return rc;
}

/* parse_fields, and on an error the address's host name too (the rest is freed there). */
static int parse_rule(struct util_file_report *c, const struct conftok_line *l, const struct ident *ident,
		      const struct hba_inc *inc, struct hba_rule *r)
{
	int rc = parse_fields(c, l, ident, inc, r);
	if (rc < 0) {
		free(r->hostname);
		r->hostname = NULL;
	}
	return rc;
}

void hba_free(struct hba *h)
{
	if (!h)
		return;
	for (int i = 0; i < h->n; i++) {
		free_list(&h->rules[i].databases);
		free_list(&h->rules[i].users);
		free(h->rules[i].map);
		free(h->rules[i].hostname);
		free_options(&h->rules[i]);
	}
	free(h->rules);
	free(h);
}

static int add_rule(void *arg, struct util_file_report *c, const struct conftok_line *l)
{
	struct hba *h = arg;
	struct hba_rule *v = grow_bytes(h->rules, &h->cap, (size_t)(h->n + 1) * sizeof(*v), 16 * sizeof(*v));
	if (!v)
		return -ENOMEM;
	h->rules = v;
	struct hba_inc inc = { h->dir, &h->includes };
	int rc = parse_rule(c, l, h->ident, &inc, &h->rules[h->n]);
	if (rc == 0)
		h->names |= h->rules[h->n++].hostname != NULL;
	return rc;
}

/* The file at path, or else data. */
static int load(struct util_file_report *c, const char *path, const char *data, size_t len, const struct ident *ident,
		struct hba **out)
{
	struct hba *h = calloc(1, sizeof(*h));
	if (!h) {
		util_file_report(c, "out of memory");
		return c->nerr;
	}
	h->ident = ident;
	if (path) {
		const char *slash = strrchr(path, '/');
		h->dir = !slash ? strdup(".") : slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
		if (!h->dir) {
			util_file_report(c, "out of memory");
			free(h);
			return c->nerr;
		}
		conftok_parse_file(c, path, HBA_FILE_MAX, add_rule, h);
		free(h->dir);
		h->dir = NULL;
	} else {
		conftok_parse(c, data, len, add_rule, h);
	}
	if (c->nerr) {
		hba_free(h);
		return c->nerr;
	}
	*out = h;
	return 0;
}

int hba_load_buffer(const char *name, const char *data, size_t len, const struct ident *ident, FILE *errout,
		    struct hba **out)
{
	struct util_file_report c = { .name = name, .what = "hba", .errout = errout };
	return load(&c, NULL, data, len, ident, out);
}

int hba_load(const char *path, const struct ident *ident, FILE *errout, struct hba **out)
{
	struct util_file_report c = { .name = path, .what = "hba", .errout = errout };
	return load(&c, path, NULL, 0, ident, out);
}

/* name NULL: a physical replication connection's database, which only "replication" matches. */
static bool list_match(const struct hba_list *l, const char *name, const char *user)
{
	for (int i = 0; i < l->n; i++) {
		if (!name) {
			if (l->v[i].kind == HBA_NAME_REPLICATION)
				return true;
			continue;
		}
		switch (l->v[i].kind) {
		case HBA_NAME_REPLICATION:
			break;
		case HBA_NAME_ALL:
			return true;
		case HBA_NAME_SAMEUSER:
			if (strcmp(name, user) == 0)
				return true;
			break;
		case HBA_NAME_LITERAL:
			if (strcmp(name, l->v[i].name) == 0)
				return true;
			break;
		}
	}
	return false;
}

/* The bytes of sa's address (4 or 16; an IPv4-mapped IPv6 address as its IPv4 when v4 is
 * wanted) into out: their count, 0 for another family. */
static int ip_bytes(const struct sockaddr *sa, bool v4, uint8_t out[16])
{
	if (sa->sa_family == AF_INET) {
		if (!v4)
			return 0;
		memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 4;
	}
	if (sa->sa_family != AF_INET6)
		return 0;
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (v4) {
		if (!IN6_IS_ADDR_V4MAPPED(a6))
			return 0;
		memcpy(out, &a6->s6_addr[12], 4);
		return 4;
	}
	memcpy(out, a6->s6_addr, 16);
	return 16;
}

/* samehost: the peer is one of this machine's interface addresses; samenet: it lies in the
 * subnet of one of them (PostgreSQL's, which also reads the interfaces at each connection).
 * An IPv4-mapped peer is compared as IPv4, as address lines do. */
static bool same_match(int same, const struct net_addr *addr)
{
	struct ifaddrs *ifs, *i;
	bool v4 = addr->sa.ss_family == AF_INET ||
		  (addr->sa.ss_family == AF_INET6 &&
		   IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)&addr->sa)->sin6_addr));
	uint8_t peer[16], a[16], m[16];
	int n = ip_bytes((const struct sockaddr *)&addr->sa, v4, peer);
	bool hit = false;

	if (!n || getifaddrs(&ifs) < 0)
		return false;
	for (i = ifs; i && !hit; i = i->ifa_next) {
		if (!i->ifa_addr || ip_bytes(i->ifa_addr, v4, a) != n || (i->ifa_addr->sa_family == AF_INET6) == v4)
			continue;
		if (same == SAME_HOST) {
			hit = memcmp(a, peer, (size_t)n) == 0;
			continue;
		}
		if (!i->ifa_netmask || ip_bytes(i->ifa_netmask, v4, m) != n)
			continue;
		hit = true;
		for (int k = 0; k < n && hit; k++)
			hit = (a[k] & m[k]) == (peer[k] & m[k]);
	}
	freeifaddrs(ifs);
	return hit;
}

/* PostgreSQL's hostname_match: the name itself, or with a leading '.' any name that ends so
 * (longer than the suffix), both case-insensitively. */
static bool name_match(const char *pattern, const char *name)
{
	if (pattern[0] == '.') {
		size_t pl = strlen(pattern), nl = strlen(name);
		return nl > pl && strcasecmp(pattern, name + nl - pl) == 0;
	}
	return strcasecmp(pattern, name) == 0;
}

static bool addr_match(const struct hba_rule *r, const struct net_addr *addr, const struct hba_peer_name *pn)
{
	uint8_t peer[16];
	int n;

	if (r->addr_all)
		return true;
	if (!addr)
		return false;
	if (r->same)
		return same_match(r->same, addr);
	if (r->hostname) /* the caller looked the name up (match: HBA_NEED_NAME before) */
		return pn && pn->verified && name_match(r->hostname, pn->name);
	n = ip_bytes((const struct sockaddr *)&addr->sa, r->family == AF_INET, peer);
	if (!n)
		return false;
	for (int i = 0; i < n; i++)
		if ((peer[i] & r->mask[i]) != r->addr[i])
			return false;
	return true;
}

static bool type_match(enum hba_type t, enum hba_conn conn)
{
	switch (t) {
	case HBA_TYPE_LOCAL:
		return conn == HBA_LOCAL;
	case HBA_TYPE_HOST:
		return conn == HBA_HOST_PLAIN || conn == HBA_HOST_TLS;
	case HBA_TYPE_HOSTSSL:
		return conn == HBA_HOST_TLS;
	case HBA_TYPE_HOSTNOSSL:
		return conn == HBA_HOST_PLAIN;
	case HBA_TYPE_HOSTGSSENC:
		return false;
	}
	return false;
}

static enum hba_result match(const struct hba *h, enum hba_conn conn, const char *database, const char *user,
			     const struct net_addr *addr, const struct hba_peer_name *pn, struct hba_hit *hit)
{
	for (int i = 0; i < h->n; i++) {
		const struct hba_rule *r = &h->rules[i];
		if (!type_match(r->type, conn))
			continue;
		if (!list_match(&r->databases, database, user) || !list_match(&r->users, user, user))
			continue;
		if (conn != HBA_LOCAL && r->hostname && addr && !pn)
			return HBA_NEED_NAME; /* the rest of the line matches: its host name decides */
		if (conn != HBA_LOCAL && !addr_match(r, addr, pn))
			continue;
		*hit = (struct hba_hit){
			.method = r->method,
			.line = r->line,
			.map = r->map,
			.ldap = r->ldap,
			.pam = r->pam,
			.clientcert = r->clientcert,
			.clientname_dn = r->clientname_dn,
		};
		return HBA_MATCH;
	}
	return HBA_NO_MATCH;
}

enum hba_result hba_match(const struct hba *h, enum hba_conn conn, const char *database, const char *user,
			  const struct net_addr *addr, const struct hba_peer_name *pn, struct hba_hit *hit)
{
	return match(h, conn, database, user, addr, pn, hit);
}

enum hba_result hba_match_physical(const struct hba *h, enum hba_conn conn, const char *user,
				   const struct net_addr *addr, const struct hba_peer_name *pn, struct hba_hit *hit)
{
	return match(h, conn, NULL, user, addr, pn, hit);
}

const struct hba_peer_name hba_no_name;

void hba_peer_name_lookup(const struct net_addr *addr, struct hba_peer_name *out)
{
	/* An IPv4-mapped peer (a dual-stack listener's) is its IPv4 address, as address lines see it. */
	bool v4 = addr->sa.ss_family == AF_INET ||
		  (addr->sa.ss_family == AF_INET6 &&
		   IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)&addr->sa)->sin6_addr));
	struct addrinfo hints = { .ai_family = v4 ? AF_INET : AF_INET6, .ai_socktype = SOCK_STREAM }, *res = NULL;
	uint8_t want[16], got[16];
	int n = ip_bytes((const struct sockaddr *)&addr->sa, v4, want);

	memset(out, 0, sizeof *out);
	if (!n || getnameinfo((const struct sockaddr *)&addr->sa, addr->len, out->name, sizeof out->name, NULL, 0,
			      NI_NAMEREQD) != 0) {
		out->name[0] = '\0';
		return;
	}
	/* The forward check: the name's addresses of the client's family hold the client's. */
	if (getaddrinfo(out->name, NULL, &hints, &res) != 0)
		return;
	for (const struct addrinfo *a = res; a && !out->verified; a = a->ai_next)
		out->verified = ip_bytes(a->ai_addr, v4, got) == n && memcmp(got, want, (size_t)n) == 0;
	freeaddrinfo(res);
}

bool hba_has_names(const struct hba *h)
{
	return h && h->names;
}

bool hba_map_admits(const struct hba *h, const char *map, const char *system_user, const char *user, int *line)
{
	*line = 0;
	if (!map)
		return strcmp(system_user, user) == 0;
	return ident_match(h->ident, map, system_user, user, line);
}

enum config_auth hba_config_auth(enum hba_method m)
{
	switch (m) {
	case HBA_TRUST:
		return CONFIG_AUTH_TRUST;
	case HBA_PASSWORD:
		return CONFIG_AUTH_PASSWORD;
	case HBA_MD5:
		return CONFIG_AUTH_MD5;
	case HBA_SCRAM:
		return CONFIG_AUTH_SCRAM;
	case HBA_CERT:
		return CONFIG_AUTH_CERT;
	case HBA_PEER:
		return CONFIG_AUTH_PEER;
	case HBA_LDAP:
		return CONFIG_AUTH_LDAP;
	case HBA_PAM:
		return CONFIG_AUTH_PAM;
	case HBA_REJECT:
		break;
	}
	return CONFIG_AUTH_REJECT;
}

const char *hba_method_name(enum hba_method m)
{
	switch (m) {
	case HBA_TRUST:
		return "trust";
	case HBA_REJECT:
		return "reject";
	case HBA_PASSWORD:
		return "password";
	case HBA_MD5:
		return "md5";
	case HBA_SCRAM:
		return "scram-sha-256";
	case HBA_CERT:
		return "cert";
	case HBA_PEER:
		return "peer";
	case HBA_LDAP:
		return "ldap";
	case HBA_PAM:
		return "pam";
	}
	return "?";
}

int hba_count(const struct hba *h)
{
	return h->n;
}
