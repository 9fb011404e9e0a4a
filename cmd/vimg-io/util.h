/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the vimg-io commands: qemu-io's number syntax, the
 * statistics line, the hex dump and error printing.  Everything here
 * prints on stdout (results) or stderr (errors, after flushing stdout so
 * that the two streams stay in order when they share a pipe).
 */
#ifndef VIMG_IO_UTIL_H
#define VIMG_IO_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Largest request qemu-io accepts: INT_MAX rounded down to 512. */
#define IO_MAX_BYTES 2147483136LL

/* Parse a size or offset as qemu-io's cvtnum does (decimal or 0x hex,
 * optional fraction, one suffix of b k m g t p e); the value, or -EINVAL
 * or -ERANGE. */
int64_t io_cvtnum(const char *s);
/* Print qemu-io's message for a failed io_cvtnum(ARG) returning RC. */
void io_cvtnum_err(int64_t rc, const char *arg);
/* io_cvtnum() and its message in one: 0 and *OUT, or -1 (printed). */
int io_arg_num(const char *arg, int64_t *out);
/* Parse a pattern byte (strtol base 0, 0..255): the byte, or -1 after
 * printing "X is not a valid pattern byte". */
int io_parse_pattern(const char *arg);

/* Format VALUE as qemu-io does ("64 KiB", "1.500 KiB", "0 bytes") into
 * STR of SIZE bytes (SIZE at least 16). */
void io_cvtstr(double value, char *str, size_t size);
/* T2 - T1. */
struct timespec io_tsub(struct timespec t2, struct timespec t1);
/* Print the two-line report ("read 512/512 bytes at offset 0" and the
 * statistics line), or the one-line -C form when TERSE. */
void io_report(const char *op, struct timespec t, int64_t offset, int64_t count,
               int64_t total, int cnt, bool terse);
/* Dump LEN bytes of BUF as qemu-io's read -v does, addresses from
 * OFFSET. */
void io_dump(const uint8_t *buf, int64_t offset, int64_t len);

/* printf to stderr after flushing stdout; no newline added. */
void io_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Report a failed libvimg call of command CMD:
 * "CMD failed: strerror(errno) (library message)". */
void io_lib_err(const char *cmd);
/* Report errno ERR for command CMD: "CMD failed: strerror(ERR)". */
void io_errno_err(const char *cmd, int err);

#endif
