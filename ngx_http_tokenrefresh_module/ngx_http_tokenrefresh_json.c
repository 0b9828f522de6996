
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * Token responses: a streaming yajl parse that picks the configured
 * fields by JSON Pointer (RFC 6901), the JWT "exp" claim, and the checks
 * a token must pass before it may be stored and sent in a header.
 *
 * Nothing here logs: errors are returned as static strings that never
 * contain bytes of the response, so the caller can log them safely.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <math.h>
#include <yajl/yajl_parse.h>


#define NGX_HTTP_TOKENREFRESH_F_ACCESS      0
#define NGX_HTTP_TOKENREFRESH_F_REFRESH     1
#define NGX_HTTP_TOKENREFRESH_F_EXPIRES_IN  2
#define NGX_HTTP_TOKENREFRESH_F_EXPIRES_AT  3
#define NGX_HTTP_TOKENREFRESH_FIELDS        4

#define NGX_HTTP_TOKENREFRESH_V_NONE        0
#define NGX_HTTP_TOKENREFRESH_V_NULL        1
#define NGX_HTTP_TOKENREFRESH_V_STRING      2
#define NGX_HTTP_TOKENREFRESH_V_NUMBER      3
#define NGX_HTTP_TOKENREFRESH_V_OTHER       4

/* ten years: longer lifetimes are taken as "does not expire soon" */
#define NGX_HTTP_TOKENREFRESH_MAX_LIFETIME  (315360000LL * 1000)


typedef struct {
    ngx_uint_t                        type;
    ngx_str_t                         value;
} ngx_http_tokenrefresh_value_t;


typedef struct {
    ngx_uint_t                        array;
    ngx_uint_t                        index;
    ngx_uint_t                        parent;    /* fields still possible */
} ngx_http_tokenrefresh_frame_t;


typedef struct {
    ngx_pool_t                       *pool;
    ngx_http_tokenrefresh_pointer_t  *fields[NGX_HTTP_TOKENREFRESH_FIELDS];
    ngx_http_tokenrefresh_value_t     values[NGX_HTTP_TOKENREFRESH_FIELDS];

    /* fields whose pointer matches the path of the next value */
    ngx_uint_t                        current;

    ngx_uint_t                        depth;
    ngx_http_tokenrefresh_frame_t     frames[NGX_HTTP_TOKENREFRESH_MAX_DEPTH
                                             + 1];
    const char                       *err;
} ngx_http_tokenrefresh_json_t;


static const char *ngx_http_tokenrefresh_json_run(
    ngx_http_tokenrefresh_json_t *js, u_char *data, size_t len);
static ngx_uint_t ngx_http_tokenrefresh_match(ngx_http_tokenrefresh_json_t *js,
    ngx_uint_t level, u_char *key, size_t len, ngx_uint_t index,
    ngx_uint_t array);
static void ngx_http_tokenrefresh_element(ngx_http_tokenrefresh_json_t *js);
static int ngx_http_tokenrefresh_scalar(ngx_http_tokenrefresh_json_t *js,
    ngx_uint_t type, const u_char *data, size_t len);
static int ngx_http_tokenrefresh_json_null(void *ctx);
static int ngx_http_tokenrefresh_json_boolean(void *ctx, int v);
static int ngx_http_tokenrefresh_json_number(void *ctx, const char *s,
    size_t len);
static int ngx_http_tokenrefresh_json_string(void *ctx,
    const unsigned char *s, size_t len);
static int ngx_http_tokenrefresh_json_start(void *ctx, ngx_uint_t array);
static int ngx_http_tokenrefresh_json_start_map(void *ctx);
static int ngx_http_tokenrefresh_json_start_array(void *ctx);
static int ngx_http_tokenrefresh_json_map_key(void *ctx,
    const unsigned char *key, size_t len);
static int ngx_http_tokenrefresh_json_end(void *ctx);
static const char *ngx_http_tokenrefresh_number(
    ngx_http_tokenrefresh_value_t *v, double *out);
static const char *ngx_http_tokenrefresh_jwt_payload(ngx_pool_t *pool,
    ngx_str_t *token, ngx_str_t *dst);
static const char *ngx_http_tokenrefresh_jwt_exp(ngx_pool_t *pool,
    ngx_str_t *token, int64_t *exp);


static yajl_callbacks  ngx_http_tokenrefresh_callbacks = {
    ngx_http_tokenrefresh_json_null,
    ngx_http_tokenrefresh_json_boolean,
    NULL,
    NULL,
    ngx_http_tokenrefresh_json_number,
    ngx_http_tokenrefresh_json_string,
    ngx_http_tokenrefresh_json_start_map,
    ngx_http_tokenrefresh_json_map_key,
    ngx_http_tokenrefresh_json_end,
    ngx_http_tokenrefresh_json_start_array,
    ngx_http_tokenrefresh_json_end
};


static ngx_str_t  ngx_http_tokenrefresh_exp_text = ngx_string("/exp");


/*
 * Splits a JSON Pointer into its reference tokens, with "~1" and "~0"
 * decoded; "" is the whole document.
 */

ngx_int_t
ngx_http_tokenrefresh_compile_pointer(ngx_pool_t *pool,
    ngx_http_tokenrefresh_pointer_t *ptr)
{
    u_char     *p, *end, *d;
    ngx_str_t  *seg;

    ptr->segments = ngx_array_create(pool, 4, sizeof(ngx_str_t));
    if (ptr->segments == NULL) {
        return NGX_ERROR;
    }

    p = ptr->text.data;
    end = p + ptr->text.len;

    if (p == end) {
        return NGX_OK;
    }

    if (*p != '/') {
        return NGX_DECLINED;
    }

    while (p < end) {

        /* p points at "/" */

        p++;

        seg = ngx_array_push(ptr->segments);
        if (seg == NULL) {
            return NGX_ERROR;
        }

        seg->data = ngx_pnalloc(pool, end - p + 1);
        if (seg->data == NULL) {
            return NGX_ERROR;
        }

        d = seg->data;

        while (p < end && *p != '/') {

            if (*p == '~') {
                if (p + 1 == end || (p[1] != '0' && p[1] != '1')) {
                    return NGX_DECLINED;
                }

                *d++ = (p[1] == '0') ? '~' : '/';
                p += 2;
                continue;
            }

            *d++ = *p++;
        }

        seg->len = d - seg->data;
    }

    if (ptr->segments->nelts > NGX_HTTP_TOKENREFRESH_MAX_DEPTH) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * Parses and validates a token response.  The expiry is, in order of
 * preference: the absolute expiry field, the relative lifetime field, the
 * "exp" claim of an access token that is a JWT, the default lifetime.
 */

const char *
ngx_http_tokenrefresh_parse_response(ngx_pool_t *pool, u_char *data,
    size_t len, ngx_http_tokenrefresh_format_t *fmt, size_t max_token_size,
    int64_t now, ngx_http_tokenrefresh_token_t *tok)
{
    double                          n;
    int64_t                         exp, life;
    const char                     *err;
    ngx_http_tokenrefresh_value_t  *v;
    ngx_http_tokenrefresh_json_t    js;

    ngx_memzero(&js, sizeof(ngx_http_tokenrefresh_json_t));
    ngx_memzero(tok, sizeof(ngx_http_tokenrefresh_token_t));

    js.pool = pool;
    js.fields[NGX_HTTP_TOKENREFRESH_F_ACCESS] = fmt->access;
    js.fields[NGX_HTTP_TOKENREFRESH_F_REFRESH] = fmt->refresh;
    js.fields[NGX_HTTP_TOKENREFRESH_F_EXPIRES_IN] = fmt->expires_in;
    js.fields[NGX_HTTP_TOKENREFRESH_F_EXPIRES_AT] = fmt->expires_at;

    err = ngx_http_tokenrefresh_json_run(&js, data, len);
    if (err) {
        return err;
    }

    /* first the refresh token: a valid one is kept whatever follows */

    v = &js.values[NGX_HTTP_TOKENREFRESH_F_REFRESH];

    if (v->type == NGX_HTTP_TOKENREFRESH_V_STRING) {
        if (v->value.len == 0) {
            return "empty refresh token";
        }

        if (ngx_http_tokenrefresh_check_token(&v->value, max_token_size)) {
            return "invalid refresh token";
        }

        tok->refresh_token = v->value;

    } else if (v->type != NGX_HTTP_TOKENREFRESH_V_NONE
               && v->type != NGX_HTTP_TOKENREFRESH_V_NULL)
    {
        return "the refresh token is not a string";
    }

    v = &js.values[NGX_HTTP_TOKENREFRESH_F_ACCESS];

    if (v->type == NGX_HTTP_TOKENREFRESH_V_NONE
        || v->type == NGX_HTTP_TOKENREFRESH_V_NULL)
    {
        return "no access token";
    }

    if (v->type != NGX_HTTP_TOKENREFRESH_V_STRING) {
        return "the access token is not a string";
    }

    err = ngx_http_tokenrefresh_check_token(&v->value, max_token_size);
    if (err) {
        return err;
    }

    tok->access_token = v->value;

    tok->issued = now;

    v = &js.values[NGX_HTTP_TOKENREFRESH_F_EXPIRES_AT];

    if (v->type != NGX_HTTP_TOKENREFRESH_V_NONE
        && v->type != NGX_HTTP_TOKENREFRESH_V_NULL)
    {
        err = ngx_http_tokenrefresh_number(v, &n);
        if (err) {
            return err;
        }

        if (!fmt->expires_at_msec) {
            n *= 1000;
        }

        life = (n - now > (double) NGX_HTTP_TOKENREFRESH_MAX_LIFETIME)
               ? NGX_HTTP_TOKENREFRESH_MAX_LIFETIME : (int64_t) n - now;

        if (life <= 0) {
            return "the token has already expired";
        }

        tok->expires = now + life;
        return NULL;
    }

    v = &js.values[NGX_HTTP_TOKENREFRESH_F_EXPIRES_IN];

    if (v->type != NGX_HTTP_TOKENREFRESH_V_NONE
        && v->type != NGX_HTTP_TOKENREFRESH_V_NULL)
    {
        err = ngx_http_tokenrefresh_number(v, &n);
        if (err) {
            return err;
        }

        n *= 1000;

        if (n < 1000) {
            return "lifetime shorter than a second";
        }

        life = (n > (double) NGX_HTTP_TOKENREFRESH_MAX_LIFETIME)
               ? NGX_HTTP_TOKENREFRESH_MAX_LIFETIME : (int64_t) n;

        tok->expires = now + life;
        return NULL;
    }

    if (ngx_http_tokenrefresh_jwt_exp(pool, &tok->access_token, &exp)
        == NULL)
    {
        life = (exp > (NGX_HTTP_TOKENREFRESH_MAX_LIFETIME + now) / 1000)
               ? NGX_HTTP_TOKENREFRESH_MAX_LIFETIME : exp * 1000 - now;

        if (life <= 0) {
            return "the token's \"exp\" claim is in the past";
        }

        tok->expires = now + life;
        return NULL;
    }

    tok->expires = now + fmt->default_lifetime;

    return NULL;
}


/*
 * The "error" of an error response (RFC 6749, section 5.2): it tells a
 * refresh token the provider refused (invalid_grant) from a client it
 * refused (invalid_client, unauthorized_client, ...).  Only a short
 * lower-case code is returned, so that it may be logged.
 */

ngx_int_t
ngx_http_tokenrefresh_parse_error(ngx_pool_t *pool, u_char *data,
    size_t len, ngx_http_tokenrefresh_pointer_t *ptr, ngx_str_t *code)
{
    size_t                         i;
    ngx_http_tokenrefresh_value_t  *v;
    ngx_http_tokenrefresh_json_t    js;

    ngx_memzero(&js, sizeof(ngx_http_tokenrefresh_json_t));
    ngx_str_null(code);

    js.pool = pool;
    js.fields[NGX_HTTP_TOKENREFRESH_F_ACCESS] = ptr;

    if (data == NULL || ngx_http_tokenrefresh_json_run(&js, data, len)) {
        return NGX_DECLINED;
    }

    v = &js.values[NGX_HTTP_TOKENREFRESH_F_ACCESS];

    if (v->type != NGX_HTTP_TOKENREFRESH_V_STRING
        || v->value.len == 0 || v->value.len > 32)
    {
        return NGX_DECLINED;
    }

    for (i = 0; i < v->value.len; i++) {
        if ((v->value.data[i] < 'a' || v->value.data[i] > 'z')
            && v->value.data[i] != '_')
        {
            return NGX_DECLINED;
        }
    }

    *code = v->value;

    return NGX_OK;
}


/*
 * A token goes into a request header: only printable ASCII without space
 * (what RFC 6750 allows in a bearer token is a subset), and not too long.
 */

const char *
ngx_http_tokenrefresh_check_token(ngx_str_t *token, size_t max_size)
{
    u_char  *p, *end;

    if (token->len == 0) {
        return "empty access token";
    }

    if (token->len > max_size) {
        return "token longer than max_token_size";
    }

    end = token->data + token->len;

    for (p = token->data; p < end; p++) {
        if (*p < 0x21 || *p > 0x7e) {
            return "token contains bytes not allowed in a header "
                   "(only 0x21-0x7E are)";
        }
    }

    return NULL;
}


static const char *
ngx_http_tokenrefresh_json_run(ngx_http_tokenrefresh_json_t *js,
    u_char *data, size_t len)
{
    ngx_uint_t    i;
    yajl_handle   h;
    yajl_status   st;

    /* at the top level every configured field may still match */

    js->frames[0].parent = 0;

    for (i = 0; i < NGX_HTTP_TOKENREFRESH_FIELDS; i++) {
        if (js->fields[i] && js->fields[i]->segments
            && js->fields[i]->segments->nelts)
        {
            js->frames[0].parent |= (ngx_uint_t) 1 << i;
        }
    }

    h = yajl_alloc(&ngx_http_tokenrefresh_callbacks, NULL, js);
    if (h == NULL) {
        return "out of memory";
    }

    st = yajl_parse(h, data, len);

    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
    }

    yajl_free(h);

    if (js->err) {
        return js->err;
    }

    if (st != yajl_status_ok) {
        return "not valid JSON";
    }

    return NULL;
}


static ngx_uint_t
ngx_http_tokenrefresh_match(ngx_http_tokenrefresh_json_t *js,
    ngx_uint_t level, u_char *key, size_t len, ngx_uint_t index,
    ngx_uint_t array)
{
    u_char      *p, buf[NGX_INT_T_LEN];
    ngx_str_t   *seg;
    ngx_uint_t   i, mask, possible;

    possible = js->frames[level].parent;
    mask = 0;

    if (possible == 0) {
        return 0;
    }

    if (array) {
        p = ngx_sprintf(buf, "%ui", index);
        key = buf;
        len = p - buf;
    }

    for (i = 0; i < NGX_HTTP_TOKENREFRESH_FIELDS; i++) {

        if (!(possible & ((ngx_uint_t) 1 << i))) {
            continue;
        }

        /* level is 1-based here: the segment for this level is level - 1 */

        if (js->fields[i]->segments->nelts < level) {
            continue;
        }

        seg = js->fields[i]->segments->elts;
        seg += level - 1;

        if (seg->len == len && ngx_memcmp(seg->data, key, len) == 0) {
            mask |= (ngx_uint_t) 1 << i;
        }
    }

    return mask;
}


/* an array element is about to be read: its index is part of the path */

static void
ngx_http_tokenrefresh_element(ngx_http_tokenrefresh_json_t *js)
{
    ngx_http_tokenrefresh_frame_t  *f;

    if (js->depth == 0) {
        js->current = 0;
        return;
    }

    f = &js->frames[js->depth];

    if (!f->array) {
        return;
    }

    js->current = ngx_http_tokenrefresh_match(js, js->depth, NULL, 0,
                                              f->index, 1);
    f->index++;
}


static int
ngx_http_tokenrefresh_scalar(ngx_http_tokenrefresh_json_t *js,
    ngx_uint_t type, const u_char *data, size_t len)
{
    ngx_uint_t                      i;
    ngx_http_tokenrefresh_value_t  *v;

    ngx_http_tokenrefresh_element(js);

    for (i = 0; i < NGX_HTTP_TOKENREFRESH_FIELDS; i++) {

        if (!(js->current & ((ngx_uint_t) 1 << i))
            || js->fields[i]->segments->nelts != js->depth)
        {
            continue;
        }

        v = &js->values[i];

        if (v->type != NGX_HTTP_TOKENREFRESH_V_NONE) {
            js->err = "a field appears twice";
            return 0;
        }

        v->type = type;

        if (data) {
            v->value.data = ngx_pnalloc(js->pool, len + 1);
            if (v->value.data == NULL) {
                js->err = "out of memory";
                return 0;
            }

            ngx_memcpy(v->value.data, data, len);
            v->value.data[len] = '\0';
            v->value.len = len;
        }
    }

    js->current = 0;

    return 1;
}


static int
ngx_http_tokenrefresh_json_null(void *ctx)
{
    return ngx_http_tokenrefresh_scalar(ctx, NGX_HTTP_TOKENREFRESH_V_NULL,
                                        NULL, 0);
}


static int
ngx_http_tokenrefresh_json_boolean(void *ctx, int v)
{
    return ngx_http_tokenrefresh_scalar(ctx, NGX_HTTP_TOKENREFRESH_V_OTHER,
                                        NULL, 0);
}


static int
ngx_http_tokenrefresh_json_number(void *ctx, const char *s, size_t len)
{
    return ngx_http_tokenrefresh_scalar(ctx, NGX_HTTP_TOKENREFRESH_V_NUMBER,
                                        (const u_char *) s, len);
}


static int
ngx_http_tokenrefresh_json_string(void *ctx, const unsigned char *s,
    size_t len)
{
    return ngx_http_tokenrefresh_scalar(ctx, NGX_HTTP_TOKENREFRESH_V_STRING,
                                        s, len);
}


static int
ngx_http_tokenrefresh_json_start(void *ctx, ngx_uint_t array)
{
    ngx_http_tokenrefresh_json_t *js = ctx;

    ngx_uint_t                      i, possible;
    ngx_http_tokenrefresh_frame_t  *f;

    ngx_http_tokenrefresh_element(js);

    if (js->depth == NGX_HTTP_TOKENREFRESH_MAX_DEPTH) {
        js->err = "JSON nested too deeply";
        return 0;
    }

    possible = (js->depth == 0) ? js->frames[0].parent : js->current;

    /* a field whose path ends at a container has a value of a wrong type */

    for (i = 0; i < NGX_HTTP_TOKENREFRESH_FIELDS; i++) {

        if (!(possible & ((ngx_uint_t) 1 << i))) {
            continue;
        }

        if (js->fields[i]->segments->nelts == js->depth) {
            if (js->values[i].type != NGX_HTTP_TOKENREFRESH_V_NONE) {
                js->err = "a field appears twice";
                return 0;
            }

            js->values[i].type = NGX_HTTP_TOKENREFRESH_V_OTHER;
            possible &= ~((ngx_uint_t) 1 << i);
        }
    }

    js->depth++;

    f = &js->frames[js->depth];
    f->array = array;
    f->index = 0;
    f->parent = possible;

    js->current = 0;

    return 1;
}


static int
ngx_http_tokenrefresh_json_start_map(void *ctx)
{
    return ngx_http_tokenrefresh_json_start(ctx, 0);
}


static int
ngx_http_tokenrefresh_json_start_array(void *ctx)
{
    return ngx_http_tokenrefresh_json_start(ctx, 1);
}


static int
ngx_http_tokenrefresh_json_map_key(void *ctx, const unsigned char *key,
    size_t len)
{
    ngx_http_tokenrefresh_json_t *js = ctx;

    js->current = ngx_http_tokenrefresh_match(js, js->depth, (u_char *) key,
                                              len, 0, 0);
    return 1;
}


static int
ngx_http_tokenrefresh_json_end(void *ctx)
{
    ngx_http_tokenrefresh_json_t *js = ctx;

    js->depth--;
    js->current = 0;

    return 1;
}


/*
 * A lifetime or an expiry: a JSON number, or a string holding one (some
 * providers send "expires_in": "3599").  Negative, fractional below a
 * second, NaN and infinity are refused; huge values are clamped later.
 */

static const char *
ngx_http_tokenrefresh_number(ngx_http_tokenrefresh_value_t *v, double *out)
{
    u_char  *p, *end;
    double   n;

    if (v->type != NGX_HTTP_TOKENREFRESH_V_NUMBER
        && v->type != NGX_HTTP_TOKENREFRESH_V_STRING)
    {
        return "the expiry is not a number";
    }

    p = v->value.data;
    end = p + v->value.len;

    /* the JSON number grammar, so that strtod() sees no "inf" or hex */

    if (p < end && *p == '-') {
        return "negative expiry";
    }

    if (p == end || *p < '0' || *p > '9') {
        return "the expiry is not a number";
    }

    while (p < end && *p >= '0' && *p <= '9') {
        p++;
    }

    if (p < end && *p == '.') {
        p++;

        if (p == end || *p < '0' || *p > '9') {
            return "the expiry is not a number";
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == end || *p < '0' || *p > '9') {
            return "the expiry is not a number";
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p != end) {
        return "the expiry is not a number";
    }

    /* the value is NUL-terminated by ngx_http_tokenrefresh_scalar() */

    n = strtod((char *) v->value.data, NULL);

    if (!isfinite(n)) {
        return "the expiry is out of range";
    }

    *out = n;

    return NULL;
}


/* the claims of a JWT: its middle part, base64url-decoded */

static const char *
ngx_http_tokenrefresh_jwt_payload(ngx_pool_t *pool, ngx_str_t *token,
    ngx_str_t *dst)
{
    u_char     *dot1, *dot2, *end;
    ngx_str_t   src;

    end = token->data + token->len;

    dot1 = ngx_strlchr(token->data, end, '.');
    if (dot1 == NULL) {
        return "not a JWT";
    }

    dot2 = ngx_strlchr(dot1 + 1, end, '.');
    if (dot2 == NULL || ngx_strlchr(dot2 + 1, end, '.') != NULL) {
        return "not a JWT";
    }

    src.data = dot1 + 1;
    src.len = dot2 - src.data;

    dst->data = ngx_pnalloc(pool, ngx_base64_decoded_length(src.len));
    if (dst->data == NULL) {
        return "out of memory";
    }

    if (ngx_decode_base64url(dst, &src) != NGX_OK) {
        return "not a JWT";
    }

    return NULL;
}


/*
 * The "sub" claim of a JWT access token: whose session it is, for "log
 * out everywhere".  NGX_DECLINED: not a JWT, or no string "sub".
 */

ngx_int_t
ngx_http_tokenrefresh_jwt_subject(ngx_pool_t *pool, ngx_str_t *token,
    ngx_str_t *sub)
{
    ngx_str_t                        dst;
    ngx_http_tokenrefresh_json_t     js;
    ngx_http_tokenrefresh_pointer_t  ptr;

    if (ngx_http_tokenrefresh_jwt_payload(pool, token, &dst) != NULL) {
        return NGX_DECLINED;
    }

    ngx_str_set(&ptr.text, "/sub");

    if (ngx_http_tokenrefresh_compile_pointer(pool, &ptr) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(&js, sizeof(ngx_http_tokenrefresh_json_t));

    js.pool = pool;
    js.fields[0] = &ptr;

    if (ngx_http_tokenrefresh_json_run(&js, dst.data, dst.len) != NULL
        || js.values[0].type != NGX_HTTP_TOKENREFRESH_V_STRING
        || js.values[0].value.len == 0)
    {
        return NGX_DECLINED;
    }

    *sub = js.values[0].value;

    return NGX_OK;
}


/*
 * The "exp" claim of a JWT (RFC 7519), read without verifying the
 * signature: the token is only ever sent back to its audience, and the
 * claim only decides when to refresh.
 */

static const char *
ngx_http_tokenrefresh_jwt_exp(ngx_pool_t *pool, ngx_str_t *token,
    int64_t *exp)
{
    double                           n;
    ngx_str_t                        dst;
    const char                      *err;
    ngx_http_tokenrefresh_json_t     js;
    ngx_http_tokenrefresh_pointer_t  ptr;

    err = ngx_http_tokenrefresh_jwt_payload(pool, token, &dst);
    if (err) {
        return err;
    }

    ptr.text = ngx_http_tokenrefresh_exp_text;

    if (ngx_http_tokenrefresh_compile_pointer(pool, &ptr) != NGX_OK) {
        return "out of memory";
    }

    ngx_memzero(&js, sizeof(ngx_http_tokenrefresh_json_t));

    js.pool = pool;
    js.fields[0] = &ptr;

    err = ngx_http_tokenrefresh_json_run(&js, dst.data, dst.len);
    if (err) {
        return err;
    }

    if (js.values[0].type != NGX_HTTP_TOKENREFRESH_V_NUMBER) {
        return "no \"exp\" claim";
    }

    err = ngx_http_tokenrefresh_number(&js.values[0], &n);
    if (err) {
        return err;
    }

    *exp = (n > 1e15) ? (int64_t) 1e15 : (int64_t) n;

    return NULL;
}
