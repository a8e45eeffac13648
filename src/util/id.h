/* Short unique connection ids: a kind letter and 8 hex digits ("c7f3a91e2", "s04bd6c1a").
 * A process-wide counter through a 32-bit bijection: unique for 2^32 ids per process, and
 * not sequential so that two ids in a log are easy to tell apart at a glance. */
#ifndef TUSK_UTIL_ID_H
#define TUSK_UTIL_ID_H

#define ID_LEN 10 /* letter + 8 hex + NUL */

void id_make(char out[ID_LEN], char kind);

#endif
