/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg create [-f FMT] [-o OPTIONS] [-b BACKING -F FMT] [-u] [-q]
 *             FILE [SIZE]
 * qemu-img create's syntax and its "Formatting ..." line.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cleanup.h"
#include "cmd.h"
#include "create.h"
#include "vimg.h"

static const char usage_text[] =
    "Usage: vimg create [-f FMT] [-o OPTIONS] [-b BACKING -F BACKING_FMT]\n"
    "                   [-u] [-q] FILE [SIZE]\n"
    "\n"
    "Create FILE in format FMT (raw by default) of SIZE bytes (suffixes\n"
    "k, M, G, T, P, E).  With -b, SIZE defaults to the backing file's.\n"
    "\n"
    "  -f FMT         raw or qcow2\n"
    "  -o OPTIONS     comma-separated options; '-o help' lists them\n"
    "  -b BACKING     backing file (qcow2), relative to FILE's folder\n"
    "  -F FMT         format of the backing file (required with -b)\n"
    "  -u             do not open the backing file (SIZE then required)\n"
    "  -q             quiet\n";

static const char qcow2_help[] =
    "Supported options:\n"
    "  backing_file=<str>     - File name of a base image\n"
    "  backing_fmt=<str>      - Image format of the base image\n"
    "  cluster_size=<size>    - qcow2 cluster size (512 to 2M, default 64k)\n"
    "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
    "  compression_type=<str> - Compression method: zlib, zstd\n"
    "  data_file=<str>        - File name of an external data file\n"
    "  data_file_raw=<bool>   - The external data file is a raw image\n"
    "  extended_l2=<bool>     - Extended L2 tables (subclusters)\n"
    "  lazy_refcounts=<bool>  - Postpone refcount updates\n"
    "  preallocation=<str>    - off, metadata, falloc, full\n"
    "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
    "  size=<size>            - Virtual disk size\n";

static const char raw_help[] =
    "Supported options:\n"
    "  preallocation=<str>    - off, falloc, full\n"
    "  size=<size>            - Virtual disk size\n";

/* qemu-img's "Formatting 'F', fmt=... size=..." line. */
static void
print_formatting(const char *file, const char *fmt, json_t *opts)
{
    static const char *const qcow2_keys[] = {
        "cluster_size", "extended_l2", "preallocation", "compression_type",
        "size", "compat", "backing_file", "backing_fmt", "data_file",
        "data_file_raw", "lazy_refcounts", "refcount_bits", NULL };
    static const char *const qcow2_dflt[] = {
        "65536", "off", NULL, "zlib", NULL, NULL, NULL, NULL, NULL, NULL,
        "off", "16", NULL };
    static const char *const raw_keys[] = { "size", "preallocation", NULL };
    const char *const *keys = strcmp(fmt, "qcow2") ? raw_keys : qcow2_keys;

    printf("Formatting '%s', fmt=%s", file, fmt);
    for (size_t i = 0; keys[i]; i++) {
        json_t *v = json_object_get(opts, keys[i]);
        const char *d = keys == qcow2_keys ? qcow2_dflt[i] : NULL;
        uint64_t sz;

        if (json_is_integer(v))
            printf(" %s=%lld", keys[i], (long long)json_integer_value(v));
        else if (json_is_string(v) && !strcmp(keys[i], "cluster_size") &&
                 vimg_parse_size(json_string_value(v), &sz) == 0)
            printf(" %s=%llu", keys[i], (unsigned long long)sz);
        else if (json_is_string(v))
            printf(" %s=%s", keys[i], json_string_value(v));
        else if (d)
            printf(" %s=%s", keys[i], d);
    }
    printf("\n");
    fflush(stdout);
}

int
cmd_create(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "quiet", no_argument, NULL, 'q' },
        { NULL, 0, NULL, 0 } };
    const char *fmt = "raw", *backing = NULL, *bfmt = NULL, *file;
    CLEANUP_FREE char *opts = NULL;
    unsigned flags = 0;
    bool quiet = false, help_opts = false;
    json_t *prepared;
    int c;

    while ((c = getopt_long(argc, argv, "+f:o:b:F:uqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'o':
            if (!strcmp(optarg, "help") || !strcmp(optarg, "?"))
                help_opts = true;
            else if (cmd_append_opts(&opts, optarg) == -1)
                goto oom;
            break;
        case 'b': backing = optarg; break;
        case 'F': bfmt = optarg; break;
        case 'u': flags |= VIMG_CREATE_UNSAFE; break;
        case 'q': quiet = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return cmd_bad_option(argv);
        }
    }
    if (strcmp(fmt, "raw") && strcmp(fmt, "qcow2")) {
        cmd_error("Unknown file format '%s'", fmt);
        return 1;
    }
    if (help_opts) {
        fputs(strcmp(fmt, "qcow2") ? raw_help : qcow2_help, stdout);
        return 0;
    }
    if (optind >= argc)
        return cmd_usage_error("expecting a filename");
    file = argv[optind++];
    if (optind < argc) {
        uint64_t size;

        if (vimg_parse_size(argv[optind], &size) == -1) {
            cmd_error("Invalid image size specified. You may use k, M, G, "
                      "T, P or E suffixes for kilobytes, megabytes, "
                      "gigabytes, terabytes, petabytes and exabytes.");
            return 1;
        }
        if (cmd_append_opt_kv(&opts, "size", argv[optind++]) == -1)
            goto oom;
    }
    if (optind < argc)
        return cmd_usage_error("unexpected argument '%s'", argv[optind]);
    if ((backing && cmd_append_opt_kv(&opts, "backing_file", backing) == -1) ||
        (bfmt && cmd_append_opt_kv(&opts, "backing_fmt", bfmt) == -1))
        goto oom;

    prepared = create_prepare(fmt, file, opts, flags);
    if (!prepared) {
        cmd_error("%s: %s", file, vimg_get_error());
        return 1;
    }
    if (!quiet)
        print_formatting(file, fmt, prepared);
    if (create_image(fmt, file, prepared) == -1) {
        json_decref(prepared);
        cmd_error("%s: %s", file, vimg_get_error());
        return 1;
    }
    json_decref(prepared);
    return 0;
oom:
    cmd_error("out of memory");
    return 1;
}
