/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg-ctl: a client of vimg-nbd's QMP socket for scripts and cron.
 * This file parses the program's options and dispatches: a verb
 * (backup, mirror, jobs, wait, events; verbs.c) or else any QMP
 * command, whose arguments come from key=value words or one JSON
 * object (args.c) and whose "return" value is printed as JSON.
 *
 * Exit status: 0 success, 1 failure (of the command, of the job, or of
 * the connection), 2 when wait does not find the job.  Every failure
 * prints one line on stderr: "vimg-ctl: WHAT: WHY".
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "error.h"
#include "vimg.h"

#ifndef VIMG_VERSION
#define VIMG_VERSION "0.1.0"
#endif

static const struct {
    const char *name;
    int (*fn)(const char *sock, int argc, char **argv);
} verbs[] = {
    { "backup", ctl_backup }, { "mirror", ctl_mirror },
    { "jobs", ctl_jobs },     { "wait", ctl_wait },
    { "events", ctl_events },
};

static void
usage(FILE *f)
{
    fprintf(f,
        "Usage: vimg-ctl -s SOCKET COMMAND [KEY=VALUE... | JSON]\n"
        "       vimg-ctl -s SOCKET VERB [ARGS...]\n"
        "Talk to vimg-nbd's QMP management socket\n"
        "\n"
        "  -s, --socket SOCKET  the QMP socket (vimg-nbd --qmp SOCKET)\n"
        "  -h, --help           display this help and exit\n"
        "  -V, --version        output version information and exit\n"
        "\n"
        "Any QMP command runs with arguments given as KEY=VALUE words\n"
        "(dotted keys nest: addr.type=unix; true/false are booleans,\n"
        "integers are numbers, KEY:=JSON is a raw JSON value) or as one\n"
        "JSON object; its return value is printed as JSON.\n"
        "\n"
        "Verbs:\n"
        "  backup NODE TARGET [--sync full|top|none|incremental]\n"
        "         [--bitmap B] [--format FMT] [--job-id ID] [--wait]\n"
        "         [--progress]\n"
        "                       drive-backup of NODE into a new file\n"
        "  mirror NODE TARGET [--sync full|top|none] [--format FMT]\n"
        "         [--job-id ID] [--wait-ready] [--complete] [--progress]\n"
        "                       drive-mirror of NODE into a new file\n"
        "  jobs                 list the jobs\n"
        "  wait [--progress] JOB\n"
        "                       wait until JOB ends\n"
        "  events [--count N]   print events as JSON lines\n"
        "\n"
        "Exit status: 0 success, 1 failure (of the command, the job or\n"
        "the connection), 2 wait found no such job.\n");
}

int
ctl_fail(const char *what)
{
    fprintf(stderr, "vimg-ctl: %s%s%s\n", what ? what : "", what ? ": " : "",
            vimg_get_error());
    return CTL_FAIL;
}

struct qmp_conn *
ctl_connect(const char *sock)
{
    struct qmp_conn *c = qmp_conn_open(sock);

    if (!c)
        ctl_fail(NULL);
    return c;
}

/* Any QMP command: ARGV[0] is its name. */
static int
generic(const char *sock, int argc, char **argv)
{
    json_t *args = ctl_parse_args(argc - 1, argv + 1), *ret = NULL;
    struct qmp_conn *c;
    int r;

    if (!args)
        return ctl_fail(argv[0]);
    if (!(c = ctl_connect(sock))) {
        json_decref(args);
        return CTL_FAIL;
    }
    r = qmp_conn_execute(c, argv[0], json_object_size(args) ? args : NULL,
                         &ret);
    qmp_conn_close(c);
    json_decref(args);
    if (r == -1)
        return ctl_fail(argv[0]);
    if (!json_is_object(ret) || json_object_size(ret)) {
        char *s = json_dumps(ret, JSON_INDENT(2) | JSON_ENCODE_ANY);

        if (s)
            printf("%s\n", s);
        free(s);
    }
    json_decref(ret);
    return CTL_OK;
}

int
main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    const char *sock = NULL;
    int ch;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, "+:s:hV", long_opts, NULL)) != -1) {
        switch (ch) {
        case 's': sock = optarg; break;
        case 'h': usage(stdout); return CTL_OK;
        case 'V': printf("vimg-ctl %s\n", VIMG_VERSION); return CTL_OK;
        case ':':
            fprintf(stderr, "vimg-ctl: option %s needs a SOCKET\n",
                    argv[optind - 1]);
            return CTL_FAIL;
        default:
            fprintf(stderr, "vimg-ctl: unknown option '%s' (try --help)\n",
                    argv[optind - 1]);
            return CTL_FAIL;
        }
    }
    if (!sock) {
        fprintf(stderr, "vimg-ctl: no socket given: -s SOCKET\n");
        return CTL_FAIL;
    }
    if (optind == argc) {
        fprintf(stderr, "vimg-ctl: no command given (try --help)\n");
        return CTL_FAIL;
    }
    argc -= optind;
    argv += optind;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (!strcmp(argv[0], verbs[i].name))
            return verbs[i].fn(sock, argc, argv);
    return generic(sock, argc, argv);
}
