
/*
 * Copyright (C) ngx_http_tokenrefresh_module authors
 *
 * Variables.  The token reaches the upstream through a variable that the
 * configuration passes explicitly (proxy_set_header, grpc_set_header,
 * fastcgi_param), never by rewriting the client's request headers, which
 * $http_authorization, subrequests (mirror, auth_request) and error_page
 * targets would all see.
 *
 * A token variable has a value only
 *   - in the client request, in the location where the module attached the
 *     token (an internal redirect resets the module context), and only
 *     while the upstream request is being built; or
 *   - for the refresh token, in the module's own refresh subrequest.
 * Everywhere else (add_header, return, log_format, subrequests) it is
 * empty.
 */


#include "ngx_http_tokenrefresh_module.h"


#define NGX_HTTP_TOKENREFRESH_VAR_ACCESS    0x01
#define NGX_HTTP_TOKENREFRESH_VAR_REFRESH   0x02
#define NGX_HTTP_TOKENREFRESH_VAR_BEARER    0x04
#define NGX_HTTP_TOKENREFRESH_VAR_FORM      0x08
#define NGX_HTTP_TOKENREFRESH_VAR_JSON      0x10


static ngx_int_t ngx_http_tokenrefresh_token_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_assertion_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_credential_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_outcome_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_wait_time_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_escape(ngx_http_request_t *r,
    ngx_str_t *token, ngx_uint_t how, ngx_http_variable_value_t *v);


static ngx_http_variable_t  ngx_http_tokenrefresh_vars[] = {

    { ngx_string("tokenrefresh_authorization"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_ACCESS|NGX_HTTP_TOKENREFRESH_VAR_BEARER,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_access_token"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_ACCESS,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_access_token_form"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_ACCESS|NGX_HTTP_TOKENREFRESH_VAR_FORM,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_access_token_json"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_ACCESS|NGX_HTTP_TOKENREFRESH_VAR_JSON,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_refresh_token"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_REFRESH,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_refresh_token_form"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_REFRESH|NGX_HTTP_TOKENREFRESH_VAR_FORM,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_refresh_token_json"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_REFRESH|NGX_HTTP_TOKENREFRESH_VAR_JSON,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_client_assertion"), NULL,
      ngx_http_tokenrefresh_assertion_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_credential"), NULL,
      ngx_http_tokenrefresh_credential_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_outcome"), NULL,
      ngx_http_tokenrefresh_outcome_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_wait_time"), NULL,
      ngx_http_tokenrefresh_wait_time_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_tokenrefresh_outcomes[] = {
    ngx_null_string,
    ngx_string("hit"),
    ngx_string("refreshed"),
    ngx_string("waited"),
    ngx_string("failed"),
    ngx_string("denied"),
    ngx_string("replayed")
};


ngx_int_t
ngx_http_tokenrefresh_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_tokenrefresh_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_token_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                        *token;
    ngx_http_tokenrefresh_ctx_t      *ctx;
    ngx_http_tokenrefresh_refresh_t  *rf;

    token = NULL;

    if (r == r->main) {
        ctx = ngx_http_get_module_ctx(r, ngx_http_tokenrefresh_module);

        if (ctx && ctx->attached
            && (data & NGX_HTTP_TOKENREFRESH_VAR_ACCESS)
            && r->upstream && r->upstream->headers_in.status_n == 0)
        {
            ctx->sent = 1;

            if (data & NGX_HTTP_TOKENREFRESH_VAR_BEARER) {
                /* made when the token was attached */
                v->data = ctx->authorization.data;
                v->len = ctx->authorization.len;
                v->valid = 1;
                v->no_cacheable = 1;
                v->not_found = 0;
                return NGX_OK;
            }

            token = &ctx->token;
        }

    } else {
        rf = ngx_http_tokenrefresh_get_refresh(r);

        if (rf && (data & NGX_HTTP_TOKENREFRESH_VAR_REFRESH)) {
            token = &rf->refresh_token;
        }
    }

    if (token == NULL || token->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_tokenrefresh_escape(r, token, data, v);
}


static ngx_int_t
ngx_http_tokenrefresh_escape(ngx_http_request_t *r, ngx_str_t *token,
    ngx_uint_t how, ngx_http_variable_value_t *v)
{
    u_char         *p, *s, *end;
    size_t          len;
    static u_char   hex[] = "0123456789ABCDEF";

    end = token->data + token->len;
    len = token->len;

    if (how & NGX_HTTP_TOKENREFRESH_VAR_BEARER) {
        len += sizeof("Bearer ") - 1;

    } else if (how & (NGX_HTTP_TOKENREFRESH_VAR_FORM
                      |NGX_HTTP_TOKENREFRESH_VAR_JSON))
    {
        /* the worst case: every byte escaped */
        len *= 3;

    } else {
        v->data = token->data;
        v->len = token->len;
        goto done;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    if (how & NGX_HTTP_TOKENREFRESH_VAR_BEARER) {
        p = ngx_cpymem(p, "Bearer ", sizeof("Bearer ") - 1);
        p = ngx_cpymem(p, token->data, token->len);

    } else if (how & NGX_HTTP_TOKENREFRESH_VAR_FORM) {

        /* application/x-www-form-urlencoded keeps only unreserved bytes */

        for (s = token->data; s < end; s++) {
            if ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')
                || (*s >= '0' && *s <= '9')
                || *s == '-' || *s == '.' || *s == '_' || *s == '~')
            {
                *p++ = *s;
                continue;
            }

            *p++ = '%';
            *p++ = hex[*s >> 4];
            *p++ = hex[*s & 0xf];
        }

    } else {

        /* a stored token is 0x21-0x7E: only '"' and '\' need escaping */

        for (s = token->data; s < end; s++) {
            if (*s == '"' || *s == '\\') {
                *p++ = '\\';
            }

            *p++ = *s;
        }
    }

    v->len = p - v->data;

done:

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* a freshly signed client assertion, in the module's token subrequests */

static ngx_int_t
ngx_http_tokenrefresh_assertion_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                          jwt;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    if (tlcf->assertion == NULL
        || ngx_http_tokenrefresh_get_refresh(r) == NULL)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    if (ngx_http_tokenrefresh_assertion(r->pool, tlcf->assertion, &jwt)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: could not sign a client assertion");
        return NGX_ERROR;
    }

    v->data = jwt.data;
    v->len = jwt.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_credential_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                        *name;
    ngx_http_tokenrefresh_ctx_t      *ctx;
    ngx_http_tokenrefresh_refresh_t  *rf;

    name = NULL;

    if (r == r->main) {
        ctx = ngx_http_tokenrefresh_find_ctx(r);

        if (ctx) {
            name = &ctx->name;
        }

    } else {
        rf = ngx_http_tokenrefresh_get_refresh(r);

        if (rf) {
            name = &rf->name;
        }
    }

    if (name == NULL || name->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = name->data;
    v->len = name->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_outcome_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_tokenrefresh_ctx_t  *ctx;

    ctx = ngx_http_tokenrefresh_find_ctx(r->main);

    if (ctx == NULL || ctx->outcome == NGX_HTTP_TOKENREFRESH_R_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ngx_http_tokenrefresh_outcomes[ctx->outcome].data;
    v->len = ngx_http_tokenrefresh_outcomes[ctx->outcome].len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_wait_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                       *p;
    ngx_msec_t                    ms;
    ngx_http_tokenrefresh_ctx_t  *ctx;

    ctx = ngx_http_tokenrefresh_find_ctx(r->main);

    if (ctx == NULL || ctx->outcome == NGX_HTTP_TOKENREFRESH_R_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    ms = ctx->waiting ? ngx_current_msec - ctx->wait_start : ctx->waited;

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%T.%03M", (time_t) ms / 1000, ms % 1000) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}
