/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg info [-f FMT | --image-opts] [-U] [--backing-chain]
 *           [--output=human|json] FILE
 *
 * The JSON is libvimg's ImageInfo (qemu-img's names and shapes); the
 * human form is printed from it the way qemu-img prints.  Backing files
 * are opened only with --backing-chain, and an external data file only
 * when --image-opts names it: an image from an untrusted source never
 * makes info open another host file by itself.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cleanup.h"
#include "cmd.h"
#include "vimg.h"

static const char usage_text[] =
    "Usage: vimg info [-f FMT | --image-opts] [-U] [--backing-chain]\n"
    "                 [--output=human|json] FILE\n"
    "\n"
    "  -f FMT            format of FILE (probed if absent)\n"
    "  --image-opts      FILE is an option string (driver=qcow2,...)\n"
    "  -U, --force-share open read-only and share the image with writers\n"
    "  --backing-chain   show every image of the backing chain\n"
    "  --output=FMT      human (default) or json\n";

static void print_human_value(json_t *v, int indent);

static void
print_indent(int indent)
{
    printf("%*s", indent, "");
}

/* Print "key: value" lines of a format-specific object, qemu style. */
static void
print_human_dict(json_t *obj, int indent)
{
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v) {
        CLEANUP_FREE char *name = strdup(key);

        for (char *p = name; p && *p; p++)
            if (*p == '-')
                *p = ' ';
        print_indent(indent);
        if (json_is_object(v) || json_is_array(v)) {
            printf("%s:\n", name);
            print_human_value(v, indent + 4);
        } else {
            printf("%s: ", name);
            print_human_value(v, 0);
        }
    }
}

static void
print_human_value(json_t *v, int indent)
{
    size_t i;
    json_t *e;

    if (json_is_object(v)) {
        print_human_dict(v, indent);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, e) {
            print_indent(indent);
            if (json_is_object(e) || json_is_array(e)) {
                printf("[%zu]:\n", i);
                print_human_value(e, indent + 4);
            } else {
                printf("[%zu]: ", i);
                print_human_value(e, 0);
            }
        }
    } else if (json_is_string(v)) {
        printf("%s\n", json_string_value(v));
    } else if (json_is_integer(v)) {
        printf("%lld\n", (long long)json_integer_value(v));
    } else if (json_is_boolean(v)) {
        printf("%s\n", json_is_true(v) ? "true" : "false");
    }
}

static long long
get_int(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static void
print_snapshots(json_t *snaps)
{
    size_t i;
    json_t *s;

    printf("Snapshot list:\n");
    printf("%-9s %-17s %7s %19s %12s %10s\n", "ID", "TAG", "VM SIZE", "DATE",
           "VM CLOCK", "ICOUNT");
    json_array_foreach(snaps, i, s) {
        CLEANUP_FREE char *vmsize = human_size(get_int(s, "vm-state-size"));
        time_t t = (time_t)get_int(s, "date-sec");
        long long clk = get_int(s, "vm-clock-sec");
        char date[32], clock[80], icount[24] = "";
        struct tm tm;

        strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S",
                 localtime_r(&t, &tm));
        snprintf(clock, sizeof clock, "%02lld:%02lld:%02lld.%03lld",
                 clk / 3600, clk / 60 % 60, clk % 60,
                 get_int(s, "vm-clock-nsec") / 1000000);
        if (json_object_get(s, "icount"))
            snprintf(icount, sizeof icount, "%lld", get_int(s, "icount"));
        printf("%-9s %-17s %7s %19s %12s %10s\n",
               json_string_value(json_object_get(s, "id")),
               json_string_value(json_object_get(s, "name")), vmsize, date,
               clock, icount);
    }
}

static void
print_human(json_t *info)
{
    const char *bf = json_string_value(json_object_get(info,
                                                       "backing-filename"));
    const char *full = json_string_value(
        json_object_get(info, "full-backing-filename"));
    long long vsize = get_int(info, "virtual-size");
    CLEANUP_FREE char *vs = human_size(vsize);
    json_t *v;

    printf("image: %s\n",
           json_string_value(json_object_get(info, "filename")));
    printf("file format: %s\n",
           json_string_value(json_object_get(info, "format")));
    printf("virtual size: %s (%lld bytes)\n", vs, vsize);
    if ((v = json_object_get(info, "actual-size"))) {
        CLEANUP_FREE char *as = human_size(json_integer_value(v));
        printf("disk size: %s\n", as);
    } else {
        printf("disk size: unavailable\n");
    }
    if ((v = json_object_get(info, "cluster-size")))
        printf("cluster_size: %lld\n", (long long)json_integer_value(v));
    if (bf) {
        if (full && strcmp(full, bf))
            printf("backing file: %s (actual path: %s)\n", bf, full);
        else
            printf("backing file: %s\n", bf);
    }
    if ((v = json_object_get(info, "backing-filename-format")))
        printf("backing file format: %s\n", json_string_value(v));
    if (json_is_true(json_object_get(info, "dirty-flag")))
        printf("cleanly shut down: no\n");
    if ((v = json_object_get(info, "snapshots")))
        print_snapshots(v);
    if ((v = json_object_get(info, "format-specific"))) {
        printf("Format specific information:\n");
        print_human_dict(json_object_get(v, "data"), 4);
    }
}

/* Collect the ImageInfo of N (and, with CHAIN, its backing files). */
static json_t *
collect(vimg_node *n, bool chain)
{
    json_t *arr = json_array();

    for (; n; n = chain ? vimg_get_backing(n) : NULL) {
        CLEANUP_FREE char *text = vimg_info_json(n);
        json_t *obj;

        if (!text || !(obj = json_loads(text, 0, NULL))) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, obj);
    }
    return arr;
}

static void
print_json(json_t *arr, bool chain)
{
    json_t *out = chain ? arr : json_array_get(arr, 0);
    CLEANUP_FREE char *s = json_dumps(out, JSON_INDENT(4) |
                                               JSON_PRESERVE_ORDER);

    printf("%s\n", s);
}

int
cmd_info(int argc, char **argv)
{
    enum { OPT_IMAGE_OPTS = 256, OPT_CHAIN, OPT_OUTPUT };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "force-share", no_argument, NULL, 'U' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "backing-chain", no_argument, NULL, OPT_CHAIN },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { NULL, 0, NULL, 0 } };
    const char *fmt = NULL, *file;
    bool image_opts = false, chain = false, json = false;
    unsigned flags = 0;
    vimg_node *n;
    json_t *arr;
    size_t i;
    int c;

    while ((c = getopt_long(argc, argv, "+f:Uh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'U': flags |= VIMG_OPEN_FORCE_SHARE; break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        case OPT_CHAIN: chain = true; break;
        case OPT_OUTPUT:
            if (cmd_parse_output(optarg, &json) == -1)
                return 1;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return cmd_bad_option(argv);
        }
    }
    if (optind != argc - 1)
        return cmd_usage_error("expecting one filename");
    file = argv[optind];
    /* Like qemu-img info: no external data file, and no backing file
     * without --backing-chain. */
    flags |= VIMG_OPEN_NO_IO;
    if (!chain)
        flags |= VIMG_OPEN_NO_BACKING;
    n = cmd_open_image(file, fmt, image_opts, flags);
    if (!n)
        return 1;
    arr = collect(n, chain);
    vimg_close(n);
    if (!arr) {
        cmd_error("%s: %s", file, vimg_get_error());
        return 1;
    }
    if (json) {
        print_json(arr, chain);
    } else {
        json_t *info;

        json_array_foreach(arr, i, info) {
            if (i)
                printf("\n");
            print_human(info);
        }
    }
    json_decref(arr);
    return 0;
}
