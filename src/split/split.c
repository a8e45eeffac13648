/* read-write-split decisions (split.h). The statement walk is flight_read_only's; this file
 * adds only the transaction-level rule and BEGIN READ ONLY, read off libpg_query's JSON. */
#include "split/split.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>

#include "flight/decide.h"

/* The first word after blanks and "--" comments, case-insensitively: BEGIN or START? Any other
 * text is not a BEGIN and needs no parse to say so. */
static bool starts_transaction(const char *s, size_t n)
{
	static const char *const words[] = { "begin", "start" };
	size_t i = 0;

	for (;;) {
		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f'))
			i++;
		if (i + 1 < n && s[i] == '-' && s[i + 1] == '-') {
			while (i < n && s[i] != '\n')
				i++;
			continue;
		}
		if (i + 1 < n && s[i] == '/' && s[i + 1] == '*')
			return true; /* let the parser read comments */
		break;
	}
	for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++) {
		size_t w = strlen(words[k]);
		if (n - i >= w && strncasecmp(s + i, words[k], w) == 0)
			return true;
	}
	return false;
}

/* Just past the last occurrence of key in text, or NULL. */
static const char *last_after(const char *text, const char *key)
{
	const char *last = NULL;
	for (const char *p = text; (p = strstr(p, key)) != NULL;)
		last = p += strlen(key);
	return last;
}

bool router_begins_read_only(const char *sql, size_t len)
{
	static const char mode[] = "\"defname\":\"transaction_read_only\",\"arg\":{\"A_Const\":{\"ival\":{";
	static const char iso[] = "\"defname\":\"transaction_isolation\",\"arg\":{\"A_Const\":{\"sval\":{\"sval\":";
	const char *stmt, *p;
	bool read_only = false;
	char *text;

	len = strnlen(sql, len);
	if (len > FLIGHT_MAX_SQL || !starts_transaction(sql, len))
		return false;
	text = malloc(len + 1);
	if (!text)
		return false;
	memcpy(text, sql, len);
	text[len] = '\0';
	PgQueryParseResult r = pg_query_parse(text);
	free(text);
	if (r.error || !r.parse_tree)
		goto out;
	/* Exactly one statement, a BEGIN or START TRANSACTION (not COMMIT, SAVEPOINT ...). */
	stmt = strstr(r.parse_tree, "\"stmts\":[{\"stmt\":{\"TransactionStmt\":{\"kind\":\"TRANS_STMT_");
	if (!stmt || strstr(stmt + 10, "{\"stmt\":") != NULL)
		goto out;
	p = stmt + strlen("\"stmts\":[{\"stmt\":{\"TransactionStmt\":{\"kind\":\"TRANS_STMT_");
	if (strncmp(p, "BEGIN\"", 6) != 0 && strncmp(p, "START\"", 6) != 0)
		goto out;
	/* Modes in text order; the last READ ONLY / READ WRITE wins, as in the server. A true
	 * constant prints as {"ival":1}, false (zero) as {}. The last isolation level, likewise: a
	 * standby refuses SERIALIZABLE ("cannot use serializable mode in a hot standby"), READ
	 * ONLY or not. */
	const char *ro = last_after(p, mode), *level = last_after(p, iso);
	read_only = ro && strncmp(ro, "\"ival\":1}", 9) == 0;
	if (level && strncmp(level, "\"serializable\"", 14) == 0)
		read_only = false;
out:
	pg_query_free_parse_result(r);
	return read_only;
}

enum router_split router_split_decide(const char *sql, size_t len)
{
	if (router_begins_read_only(sql, len) || flight_read_only(sql, len))
		return ROUTER_SPLIT_STANDBY;
	return ROUTER_SPLIT_PRIMARY;
}

const char *router_split_name(enum router_split s)
{
	return s == ROUTER_SPLIT_STANDBY ? "standby" : "primary";
}
