/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Shared declarations of the vimg subcommands. */
#ifndef VIMG_CMD_H
#define VIMG_CMD_H

#include <stdbool.h>
#include <stdint.h>

#include "vimg.h"

#define CMD(name, fn, summary) int fn(int argc, char **argv);
#include "commands.def"
#undef CMD

/* Name of the running subcommand, for messages. */
extern const char *cmd_name;

/* Print "vimg: CMD: MESSAGE" (printf format) on stderr. */
void cmd_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "vimg: CMD: warning: MESSAGE" (printf format) on stderr. */
void cmd_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "vimg: CMD: [PREFIX: ]<library error>" on stderr. */
void cmd_lib_error(const char *prefix);
/* Print "Try 'vimg CMD --help'" style usage error; returns 1. */
int cmd_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* After getopt returned '?': one usage line naming the option; 1. */
int cmd_bad_option(char **argv);

/* Open FILE with format FMT (NULL: probe) or, with IMAGE_OPTS, as an
 * option string; on failure prints one error line and returns NULL. */
vimg_node *cmd_open_image(const char *file, const char *fmt,
                          bool image_opts, unsigned flags);
/* --output=human|json; on anything else prints a usage error, -1. */
int cmd_parse_output(const char *arg, bool *json);

/* Append ",STR" (STR already in -o syntax) to the malloc'd option
 * string *OPTS (NULL: empty); -1 on ENOMEM. */
int cmd_append_opts(char **opts, const char *str);

/* Append ",KEY=VALUE" to *OPTS, doubling the commas of VALUE. */
int cmd_append_opt_kv(char **opts, const char *key, const char *value);

/* qemu's size_to_str: "64 MiB", "196 KiB", "0 B"; caller frees. */
char *human_size(uint64_t val);

#endif
