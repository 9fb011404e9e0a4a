/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg check [-f FMT | --image-opts] [-r leaks|all] [--output=human|json]
 *            [-U] [-q] FILE
 *
 * Runs the format driver's consistency check and prints qemu-img 7.2's
 * report: the driver's findings on stderr as they come, then the summary
 * (human) or the ImageCheck object (JSON, keys in qemu-img's order, each
 * only when non-zero).  With -r the image is opened read-write (corrupt
 * images too) and, when something was repaired, checked a second time,
 * as qemu-img does.  Exit codes: 0 consistent (or repaired), 1 the check
 * could not complete, 2 corruptions, 3 leaks only, 63 no check support.
 * Backing files are never opened: the check covers FILE alone.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cleanup.h"
#include "cmd.h"
#include "node.h"
#include "vimg.h"

static const char usage_text[] =
    "Usage: vimg check [-f FMT | --image-opts] [-r leaks|all]\n"
    "                  [--output=human|json] [-U] [-q] FILE\n"
    "\n"
    "  -f FMT            format of FILE (probed if absent)\n"
    "  --image-opts      FILE is an option string (driver=qcow2,...)\n"
    "  -r leaks          repair leaked clusters\n"
    "  -r all            repair leaks and corruptions\n"
    "  --output=FMT      human (default) or json\n"
    "  -U, --force-share open read-only and share the image with writers\n"
    "  -q, --quiet       print nothing on stdout\n"
    "\n"
    "Exit status: 0 consistent, 1 check failed, 2 corruptions,\n"
    "3 leaked clusters only, 63 format without checks.\n";

static void
report(void *opaque, const char *msg)
{
    (void)opaque;
    fflush(stdout);
    fprintf(stderr, "%s\n", msg);
}

static void
print_human(const struct check_result *r)
{
    if (!(r->corruptions || r->leaks || r->check_errors)) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            printf("\n%llu errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image "
                   "may corrupt it.\n",
                   (unsigned long long)r->corruptions);
        if (r->leaks)
            printf("\n%llu leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   (unsigned long long)r->leaks);
        if (r->check_errors)
            printf("\n%llu internal errors have occurred during the "
                   "check.\n",
                   (unsigned long long)r->check_errors);
    }
    if (r->total_clusters && r->allocated_clusters)
        printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% "
               "compressed clusters\n",
               (unsigned long long)r->allocated_clusters,
               (unsigned long long)r->total_clusters,
               r->allocated_clusters * 100.0 / r->total_clusters,
               r->fragmented_clusters * 100.0 / r->allocated_clusters,
               r->compressed_clusters * 100.0 / r->allocated_clusters);
    if (r->image_end_offset)
        printf("Image end offset: %llu\n",
               (unsigned long long)r->image_end_offset);
}

static void
put(json_t *o, const char *key, uint64_t v, bool always)
{
    if (v || always)
        json_object_set_new(o, key, json_integer((json_int_t)v));
}

/* qemu-img prints a QDict: the keys come in the order of its hash
 * buckets, which is this one. */
static void
print_json(const struct check_result *r, const char *filename,
           const char *format)
{
    json_t *o = json_object();
    char *s;

    put(o, "image-end-offset", r->image_end_offset, false);
    put(o, "compressed-clusters", r->compressed_clusters, false);
    put(o, "total-clusters", r->total_clusters, false);
    put(o, "corruptions", r->corruptions, false);
    put(o, "corruptions-fixed", r->corruptions_fixed, false);
    put(o, "check-errors", r->check_errors, true);
    put(o, "leaks", r->leaks, false);
    put(o, "leaks-fixed", r->leaks_fixed, false);
    put(o, "allocated-clusters", r->allocated_clusters, false);
    json_object_set_new(o, "filename", json_string(filename));
    json_object_set_new(o, "format", json_string(format));
    put(o, "fragmented-clusters", r->fragmented_clusters, false);
    s = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
}

/* Run the check (and the double check after a repair).  -1: failed. */
static int
run_check(struct node *n, unsigned fix, bool json, bool quiet,
          struct check_result *r)
{
    uint64_t leaks_fixed, corruptions_fixed;

    memset(r, 0, sizeof *r);
    r->report = report;
    if (n->drv->check(n, r, fix) == -1)
        return -1;
    if (!r->corruptions_fixed && !r->leaks_fixed)
        return 0;
    leaks_fixed = r->leaks_fixed;
    corruptions_fixed = r->corruptions_fixed;
    if (!json && !quiet)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %llu leaked clusters\n"
               "    %llu corruptions\n\n"
               "Double checking the fixed image now...\n",
               (unsigned long long)leaks_fixed,
               (unsigned long long)corruptions_fixed);
    memset(r, 0, sizeof *r);
    r->report = report;
    if (n->drv->check(n, r, 0) == -1)
        return -1;
    r->leaks_fixed = leaks_fixed;
    r->corruptions_fixed = corruptions_fixed;
    return 0;
}

static int
parse_repair(const char *arg, unsigned *fix)
{
    if (!strcmp(arg, "leaks"))
        *fix = CHECK_FIX_LEAKS;
    else if (!strcmp(arg, "all"))
        *fix = CHECK_FIX_LEAKS | CHECK_FIX_ERRORS;
    else
        return -1;
    return 0;
}

int
cmd_check(int argc, char **argv)
{
    enum { OPT_IMAGE_OPTS = 256, OPT_OUTPUT };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "repair", required_argument, NULL, 'r' },
        { "force-share", no_argument, NULL, 'U' },
        { "quiet", no_argument, NULL, 'q' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { NULL, 0, NULL, 0 } };
    const char *fmt = NULL, *file;
    bool image_opts = false, json = false, quiet = false, share = false;
    unsigned fix = 0, flags = VIMG_OPEN_NO_BACKING;
    struct check_result r;
    vimg_node *h;
    int c, ret;

    while ((c = getopt_long(argc, argv, "+f:r:T:Uqh", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'r':
            if (parse_repair(optarg, &fix) == -1)
                return cmd_usage_error("-r must be 'leaks' or 'all', not "
                                       "'%s'", optarg);
            break;
        case 'T': break; /* qemu-img's cache mode: accepted, unused */
        case 'U': share = true; break;
        case 'q': quiet = true; break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
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
    if (share && fix)
        return cmd_usage_error("-U cannot be used with -r");
    if (fix)
        flags |= VIMG_OPEN_RDWR | VIMG_OPEN_CHECK;
    if (share)
        flags |= VIMG_OPEN_FORCE_SHARE;
    h = cmd_open_image(file, fmt, image_opts, flags);
    if (!h)
        return 1;
    if (!node_of(h)->drv->check) {
        cmd_error("%s: This image format does not support checks", file);
        vimg_close(h);
        return 63;
    }
    ret = run_check(node_of(h), fix, json, quiet, &r);
    if (ret == 0 && !quiet) {
        if (json)
            print_json(&r, file, vimg_get_format(h));
        else
            print_human(&r);
    }
    fflush(stdout);
    if (ret == -1)
        cmd_error("%s: Check failed: %s", file, vimg_get_error());
    if (vimg_close(h) == -1 && ret == 0) {
        cmd_error("%s: %s", file, vimg_get_error());
        ret = -1;
    }
    if (ret == -1)
        return 1;
    if (r.check_errors) {
        cmd_error("%s: Check failed", file);
        return 1;
    }
    return r.corruptions ? 2 : r.leaks ? 3 : 0;
}
