
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * libFuzzer target for the token response parser and the token checks
 * (ngx_http_tokenrefresh_json.c), linked with nginx's own pool, array and
 * string code.  The first input byte chooses how the response is read
 * (standard fields, nested JSON Pointers, absolute expiry in seconds or
 * milliseconds); the rest is the response body.
 *
 * Whatever the input, the parser must not crash, leak or read out of
 * bounds, and what it accepts must be storable: tokens of 1 to
 * max_token_size bytes in 0x21-0x7E, an expiry in the future.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <stdlib.h>


#define FUZZ_NOW        1767225600000LL    /* 2026-01-01, in ms */
#define FUZZ_MAX_TOKEN  4096


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* what nginx's string code refers to (ngx_explicit_memzero, logging) */
volatile ngx_cycle_t   *ngx_cycle;

static ngx_log_t        fuzz_log;
static ngx_pool_t      *fuzz_conf_pool;
static ngx_uint_t       fuzz_ready;

static ngx_http_tokenrefresh_pointer_t  fuzz_pointers[8];

static char  *fuzz_pointer_text[8] = {
    "/access_token", "/refresh_token", "/expires_in", "/expires_at",
    "/data/accessToken", "/data/refreshToken", "/data/accessTokenExp",
    "/a~1b/0/~0c"
};


/* nginx's logging is not linked in: the parser never logs anyway */

void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


static void
fuzz_init(void)
{
    ngx_uint_t  i;

    ngx_pagesize = getpagesize();
    ngx_cacheline_size = NGX_CPU_CACHE_LINE;

    fuzz_log.log_level = NGX_LOG_EMERG;

    fuzz_conf_pool = ngx_create_pool(16384, &fuzz_log);
    if (fuzz_conf_pool == NULL) {
        abort();
    }

    for (i = 0; i < 8; i++) {
        fuzz_pointers[i].text.data = (u_char *) fuzz_pointer_text[i];
        fuzz_pointers[i].text.len = ngx_strlen(fuzz_pointer_text[i]);

        if (ngx_http_tokenrefresh_compile_pointer(fuzz_conf_pool,
                                                  &fuzz_pointers[i])
            != NGX_OK)
        {
            abort();
        }
    }

    fuzz_ready = 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                         *p, *copy;
    ngx_str_t                       t;
    ngx_pool_t                     *pool;
    const char                     *err;
    ngx_http_tokenrefresh_token_t   tok;
    ngx_http_tokenrefresh_format_t  fmt;

    if (!fuzz_ready) {
        fuzz_init();
    }

    if (size < 1) {
        return 0;
    }

    ngx_memzero(&fmt, sizeof(ngx_http_tokenrefresh_format_t));

    fmt.default_lifetime = 300000;
    fmt.max_response_size = 65536;

    switch (data[0] % 4) {

    case 0:
        fmt.access = &fuzz_pointers[0];
        fmt.refresh = &fuzz_pointers[1];
        fmt.expires_in = &fuzz_pointers[2];
        break;

    case 1:
        fmt.access = &fuzz_pointers[4];
        fmt.refresh = &fuzz_pointers[5];
        fmt.expires_at = &fuzz_pointers[6];
        fmt.expires_at_msec = 1;
        break;

    case 2:
        fmt.access = &fuzz_pointers[0];
        fmt.refresh = &fuzz_pointers[7];
        fmt.expires_at = &fuzz_pointers[3];
        break;

    default:
        fmt.access = &fuzz_pointers[7];
        break;
    }

    pool = ngx_create_pool(4096, &fuzz_log);
    if (pool == NULL) {
        abort();
    }

    /* an exact copy, so that a read past the input is caught */

    copy = malloc(size - 1 ? size - 1 : 1);
    if (copy == NULL) {
        abort();
    }

    ngx_memcpy(copy, data + 1, size - 1);

    err = ngx_http_tokenrefresh_parse_response(pool, copy, size - 1, &fmt,
                                               FUZZ_MAX_TOKEN, FUZZ_NOW,
                                               &tok);

    if (err == NULL) {
        if (ngx_http_tokenrefresh_check_token(&tok.access_token,
                                              FUZZ_MAX_TOKEN)
            != NULL
            || (tok.refresh_token.len
                && ngx_http_tokenrefresh_check_token(&tok.refresh_token,
                                                     FUZZ_MAX_TOKEN)
                   != NULL)
            || tok.expires <= FUZZ_NOW
            || tok.issued != FUZZ_NOW)
        {
            /* the parser accepted what must never be stored */
            abort();
        }

    } else {
        /* errors are fixed strings, never bytes of the response */
        for (p = (u_char *) err; *p; p++) {
            if (*p < 0x20 || *p > 0x7e) {
                abort();
            }
        }
    }

    /* the token check on raw bytes, too */

    t.data = copy;
    t.len = size - 1;
    (void) ngx_http_tokenrefresh_check_token(&t, FUZZ_MAX_TOKEN);

    free(copy);
    ngx_destroy_pool(pool);

    return 0;
}
