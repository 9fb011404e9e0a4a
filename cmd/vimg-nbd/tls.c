/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TLS with OpenSSL: x509 (server certificate and key; with a CA file,
 * client certificates are required and verified) and PSK from a file of
 * "username:hexkey" lines (the format qemu and nbdkit read).  TLS 1.2 is
 * the minimum.
 *
 * An OpenSSL connection must not be entered by two threads at once, but
 * our workers read and write the socket concurrently.  So after the
 * handshake the socket is non-blocking, every SSL call runs under the
 * connection's tls lock, and a call that would block drops the lock and
 * waits in poll() before trying again.  At most one thread reads (rlock)
 * and one writes (wlock) at a time; OpenSSL never reads the socket from
 * SSL_write nor writes it from SSL_read here (renegotiation is off, and a
 * TLS 1.3 KeyUpdate answer waits for the next SSL_write), so neither can
 * consume the readiness the other is polling for.  SSL_get_error() reads
 * the thread's error queue, so it is emptied before each SSL call.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cleanup.h"
#include "server.h"

struct psk_entry {
    char *user;
    unsigned char key[256];
    unsigned len;
};

struct tls_config {
    SSL_CTX *ctx;
    struct psk_entry *psk;
    size_t npsk;
};

struct tls_conn {
    SSL *ssl;
    int fd;
    pthread_mutex_t lock;
};

static void
print_ssl_error(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];

    if (e) {
        ERR_error_string_n(e, buf, sizeof buf);
        fprintf(stderr, "vimg-nbd: %s: %s\n", what, buf);
    } else {
        fprintf(stderr, "vimg-nbd: %s failed\n", what);
    }
    ERR_clear_error();
}

static int
hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int
load_psk(struct tls_config *t, const char *path)
{
    FILE *f = fopen(path, "r");
    CLEANUP_FREE char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned lineno = 0;

    if (!f) {
        fprintf(stderr, "vimg-nbd: %s: %m\n", path);
        return -1;
    }
    while ((len = getline(&line, &cap, f)) != -1) {
        struct psk_entry *e, *v;
        char *colon, *hex;
        size_t hl;

        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        colon = strchr(line, ':');
        hex = colon ? colon + 1 : NULL;
        hl = hex ? strlen(hex) : 0;
        if (!colon || colon == line || hl == 0 || hl % 2 || hl / 2 > 256) {
            fprintf(stderr, "vimg-nbd: %s:%u: expected username:hexkey\n",
                    path, lineno);
            fclose(f);
            return -1;
        }
        v = realloc(t->psk, (t->npsk + 1) * sizeof *v);
        if (!v) {
            fclose(f);
            return -1;
        }
        t->psk = v;
        e = &v[t->npsk];
        *e = (struct psk_entry){ .user = strndup(line, colon - line),
                                 .len = (unsigned)(hl / 2) };
        for (size_t i = 0; i < hl / 2; i++) {
            int a = hexval(hex[2 * i]), b = hexval(hex[2 * i + 1]);

            if (a < 0 || b < 0) {
                fprintf(stderr, "vimg-nbd: %s:%u: bad hex key\n", path,
                        lineno);
                free(e->user);
                fclose(f);
                return -1;
            }
            e->key[i] = (unsigned char)(a * 16 + b);
        }
        if (!e->user) {
            fclose(f);
            return -1;
        }
        t->npsk++;
    }
    fclose(f);
    if (t->npsk == 0) {
        fprintf(stderr, "vimg-nbd: %s: no keys\n", path);
        return -1;
    }
    return 0;
}

static unsigned
psk_cb(SSL *ssl, const char *identity, unsigned char *psk,
       unsigned max_len)
{
    const struct tls_config *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

    for (size_t i = 0; identity && i < t->npsk; i++)
        if (!strcmp(t->psk[i].user, identity) && t->psk[i].len <= max_len) {
            memcpy(psk, t->psk[i].key, t->psk[i].len);
            return t->psk[i].len;
        }
    return 0;
}

struct tls_config *
tls_config_new(const char *cert, const char *key, const char *ca,
               const char *psk_file)
{
    struct tls_config *t = calloc(1, sizeof *t);

    if (!t)
        return NULL;
    t->ctx = SSL_CTX_new(TLS_server_method());
    if (!t->ctx) {
        print_ssl_error("SSL_CTX_new");
        goto fail;
    }
    SSL_CTX_set_app_data(t->ctx, t);
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION);
    /* Needed for session resumption once client certificates are
     * verified (else OpenSSL fails such a handshake); DHE-PSK needs DH. */
    SSL_CTX_set_session_id_context(t->ctx, (const unsigned char *)"vimg-nbd",
                                   8);
    SSL_CTX_set_dh_auto(t->ctx, 1);
    if (cert || key) {
        if (!cert || !key) {
            fprintf(stderr, "vimg-nbd: --tls-cert and --tls-key go "
                            "together\n");
            goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(t->ctx, cert) != 1) {
            print_ssl_error(cert);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(t->ctx) != 1) {
            print_ssl_error(key);
            goto fail;
        }
    }
    if (ca) {
        if (SSL_CTX_load_verify_locations(t->ctx, ca, NULL) != 1) {
            print_ssl_error(ca);
            goto fail;
        }
        SSL_CTX_set_verify(t->ctx,
                           SSL_VERIFY_PEER |
                               SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           NULL);
    }
    if (psk_file) {
        if (load_psk(t, psk_file) == -1)
            goto fail;
        SSL_CTX_set_psk_server_callback(t->ctx, psk_cb);
        if (SSL_CTX_set_cipher_list(t->ctx, "DEFAULT:PSK:DHE-PSK:ECDHE-PSK")
            != 1) {
            print_ssl_error("cipher list");
            goto fail;
        }
    }
    return t;
fail:
    tls_config_free(t);
    return NULL;
}

void
tls_config_free(struct tls_config *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    for (size_t i = 0; i < t->npsk; i++) {
        free(t->psk[i].user);
        OPENSSL_cleanse(t->psk[i].key, sizeof t->psk[i].key);
    }
    free(t->psk);
    free(t);
}

/* Wait until the socket can do what SSL asked for (ERR). */
static int
tls_wait(struct tls_conn *tc, int err)
{
    struct pollfd p = { .fd = tc->fd,
                        .events = err == SSL_ERROR_WANT_WRITE ? POLLOUT
                                                              : POLLIN };
    int r;

    do
        r = poll(&p, 1, -1);
    while (r == -1 && errno == EINTR);
    return r == -1 ? -1 : 0;
}

static ssize_t
tls_recv(void *h, void *buf, size_t len)
{
    struct tls_conn *tc = h;

    for (;;) {
        int r, err;

        pthread_mutex_lock(&tc->lock);
        ERR_clear_error();
        r = SSL_read(tc->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(tc->ssl, r);
        if (err != SSL_ERROR_NONE)
            ERR_clear_error();
        pthread_mutex_unlock(&tc->lock);
        if (r > 0)
            return r;
        if (err == SSL_ERROR_ZERO_RETURN)
            return 0;
        if ((err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) &&
            tls_wait(tc, err) == 0)
            continue;
        errno = EIO;
        return -1;
    }
}

static int
tls_write_all(struct tls_conn *tc, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        int n = len > (1u << 30) ? (1 << 30) : (int)len, r, err;

        pthread_mutex_lock(&tc->lock);
        ERR_clear_error();
        r = SSL_write(tc->ssl, p, n);
        err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(tc->ssl, r);
        if (err != SSL_ERROR_NONE)
            ERR_clear_error();
        pthread_mutex_unlock(&tc->lock);
        if (r > 0) {
            p += r;
            len -= (size_t)r;
            continue;
        }
        if ((err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) &&
            tls_wait(tc, err) == 0)
            continue;
        errno = EIO;
        return -1;
    }
    return 0;
}

/* Small pieces (headers) are gathered so that a reply's header and
 * payload share a TLS record where they fit. */
static ssize_t
tls_sendv(void *h, const struct iovec *iov, int iovcnt)
{
    struct tls_conn *tc = h;
    char buf[16384];
    size_t used = 0, total = 0;

    for (int i = 0; i < iovcnt; i++) {
        if (used + iov[i].iov_len <= sizeof buf) {
            memcpy(buf + used, iov[i].iov_base, iov[i].iov_len);
            used += iov[i].iov_len;
        } else {
            if (used && tls_write_all(tc, buf, used) == -1)
                return -1;
            used = 0;
            if (tls_write_all(tc, iov[i].iov_base, iov[i].iov_len) == -1)
                return -1;
        }
        total += iov[i].iov_len;
    }
    if (used && tls_write_all(tc, buf, used) == -1)
        return -1;
    return (ssize_t)total;
}

static void
tls_close(void *h)
{
    struct tls_conn *tc = h;

    pthread_mutex_lock(&tc->lock);
    ERR_clear_error();
    SSL_shutdown(tc->ssl);
    ERR_clear_error();
    pthread_mutex_unlock(&tc->lock);
    SSL_free(tc->ssl);
    pthread_mutex_destroy(&tc->lock);
    free(tc);
}

static const struct conn_io tls_io = {
    .recv = tls_recv,
    .sendv = tls_sendv,
    .close = tls_close,
};

int
tls_start(struct conn *c)
{
    struct tls_conn *tc = calloc(1, sizeof *tc);
    int fl;

    if (!tc)
        return -1;
    tc->fd = c->fd;
    tc->ssl = SSL_new(c->srv->tls->ctx);
    if (!tc->ssl || SSL_set_fd(tc->ssl, c->fd) != 1) {
        print_ssl_error("SSL_new");
        goto fail;
    }
    ERR_clear_error();
    if (SSL_accept(tc->ssl) != 1) {
        print_ssl_error("TLS handshake");
        goto fail;
    }
    fl = fcntl(c->fd, F_GETFL);
    if (fl == -1 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) == -1) {
        fprintf(stderr, "vimg-nbd: fcntl: %m\n");
        goto fail;
    }
    pthread_mutex_init(&tc->lock, NULL);
    c->io = &tls_io;
    c->io_handle = tc;
    return 0;
fail:
    SSL_free(tc->ssl);
    free(tc);
    return -1;
}
