
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * hiredis' asynchronous API driven by nginx's event loop: each worker of a
 * zone with redis= keeps two connections, one for the fleet's scripts
 * (ngx_http_tokenrefresh_fleet.c) and one subscribed to the zone's
 * channel, since a subscribed connection can send no other command.
 *
 * hiredis owns the socket: it connects (non-blocking, to an address, never
 * a name: a name would be resolved with a blocking getaddrinfo), reads,
 * writes and closes.  nginx lends it an ngx_connection_t for the events:
 * level-triggered, since redisAsyncHandleRead() reads once and an
 * edge-triggered event would not come again for what is left; the
 * connection is given back in the cleanup hook without closing the
 * descriptor (hiredis closes it right after).  hiredis 0.14 has no
 * timeouts: the module keeps its own timers, and when one fires it drops
 * the connection, which calls every pending callback with a NULL reply.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


typedef struct {
    ngx_str_t                         addr;      /* "unix:/path" or ip:port */
    ngx_str_t                         password;
    ngx_uint_t                        db;
    ngx_msec_t                        timeout;
} ngx_http_tokenrefresh_redis_conf_t;


typedef struct {
    ngx_http_tokenrefresh_redis_conf_t  *conf;
    ngx_http_tokenrefresh_fleet_stats_t *stats;
    ngx_http_tokenrefresh_zone_t        *zone;
    redisAsyncContext                   *ac;
    ngx_connection_t                    *c;
    ngx_event_t                          reconnect;
    ngx_event_t                          deadline;   /* the connect's */
    ngx_event_t                          slow;       /* the commands' */
    ngx_uint_t                           pending;
    ngx_msec_t                           backoff;
    ngx_uint_t                           connected;
    ngx_uint_t                           down;      /* said once */
    ngx_uint_t                           subscriber;
    ngx_uint_t                           exiting;
    ngx_log_t                           *log;
} ngx_http_tokenrefresh_redis_t;


/* a command in flight: whose answer it is, and when it was sent */
typedef struct {
    ngx_http_tokenrefresh_redis_t       *rd;
    void                               (*handler)(void *data, void *reply);
    void                                *data;
    ngx_msec_t                           sent;
} ngx_http_tokenrefresh_redis_call_t;


static void ngx_http_tokenrefresh_redis_read(ngx_event_t *ev);
static void ngx_http_tokenrefresh_redis_write(ngx_event_t *ev);
static void ngx_http_tokenrefresh_redis_add_read(void *data);
static void ngx_http_tokenrefresh_redis_del_read(void *data);
static void ngx_http_tokenrefresh_redis_add_write(void *data);
static void ngx_http_tokenrefresh_redis_del_write(void *data);
static void ngx_http_tokenrefresh_redis_cleanup(void *data);
static void ngx_http_tokenrefresh_redis_connected(
    const redisAsyncContext *ac, int status);
static void ngx_http_tokenrefresh_redis_disconnected(
    const redisAsyncContext *ac, int status);
static void ngx_http_tokenrefresh_redis_retry(ngx_event_t *ev);
static void ngx_http_tokenrefresh_redis_too_slow(ngx_event_t *ev);
static void ngx_http_tokenrefresh_redis_ready(redisAsyncContext *ac,
    void *r, void *data);
static void ngx_http_tokenrefresh_redis_reply(redisAsyncContext *ac,
    void *r, void *data);
static void ngx_http_tokenrefresh_redis_message(redisAsyncContext *ac,
    void *r, void *data);
static ngx_int_t ngx_http_tokenrefresh_redis_send(
    ngx_http_tokenrefresh_zone_t *zone, ngx_uint_t argc, const char **argv,
    size_t *lens, void (*handler)(void *data, void *reply), void *data);
static ngx_http_tokenrefresh_redis_t *ngx_http_tokenrefresh_redis_client(
    ngx_cycle_t *cycle, ngx_http_tokenrefresh_zone_t *zone,
    ngx_uint_t subscriber);
static void ngx_http_tokenrefresh_redis_up_down(
    ngx_http_tokenrefresh_redis_t *rd, ngx_uint_t up);


static ngx_int_t ngx_http_tokenrefresh_redis_connect(
    ngx_http_tokenrefresh_redis_t *rd);


/*
 * redis=unix:/path or redis=IP:port; a name is refused: hiredis would
 * resolve it with a blocking getaddrinfo() in a worker
 */

ngx_int_t
ngx_http_tokenrefresh_redis_addr(ngx_conf_t *cf, ngx_str_t *addr)
{
    u_char     *p, *last;
    ngx_int_t   port;
    ngx_str_t   host;
#if (NGX_HAVE_INET6)
    u_char      buf[16];
#endif

    if (addr->len > 5 && ngx_strncmp(addr->data, "unix:", 5) == 0) {
        return NGX_OK;
    }

    last = addr->data + addr->len;

    for (p = last; p > addr->data && p[-1] != ':'; p--) { /* void */ }

    port = (p > addr->data) ? ngx_atoi(p, last - p) : NGX_ERROR;

    host.data = addr->data;
    host.len = (p > addr->data) ? (size_t) (p - 1 - addr->data) : 0;

    if (host.len > 2 && host.data[0] == '[' && host.data[host.len - 1] == ']')
    {
        host.data++;
        host.len -= 2;
    }

    if (port < 1 || port > 65535) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"redis=%V\": a port from 1 to 65535 "
                           "is expected", addr);
        return NGX_ERROR;
    }

    if ((ngx_inet_addr(host.data, host.len) == INADDR_NONE
#if (NGX_HAVE_INET6)
            && ngx_inet6_addr(host.data, host.len, buf) != NGX_OK
#endif
           ))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"redis=%V\": \"unix:/path\" or an IP "
                           "address and a port are expected (a name would "
                           "be resolved by a blocking call in a worker)",
                           addr);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_tokenrefresh_redis_init(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone)
{
    /* workers only: the cache manager and loader need no fleet */

    if (zone->redis_addr.len == 0
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    zone->redis = ngx_http_tokenrefresh_redis_client(cycle, zone, 0);
    zone->redis_sub = ngx_http_tokenrefresh_redis_client(cycle, zone, 1);

    if (zone->redis == NULL || zone->redis_sub == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_http_tokenrefresh_redis_t *
ngx_http_tokenrefresh_redis_client(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone, ngx_uint_t subscriber)
{
    ngx_http_tokenrefresh_redis_t       *rd;
    ngx_http_tokenrefresh_redis_conf_t  *conf;

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_http_tokenrefresh_redis_t));
    conf = ngx_pcalloc(cycle->pool,
                       sizeof(ngx_http_tokenrefresh_redis_conf_t));
    if (rd == NULL || conf == NULL) {
        return NULL;
    }

    conf->addr = zone->redis_addr;
    conf->password = zone->redis_password;
    conf->db = zone->redis_db;
    conf->timeout = 1000;

    rd->conf = conf;
    rd->stats = &zone->sh->fleet;
    rd->zone = zone;
    rd->log = cycle->log;
    rd->subscriber = subscriber;

    if (ngx_http_tokenrefresh_redis_connect(rd) != NGX_OK) {
        ngx_add_timer(&rd->reconnect, rd->backoff);
    }

    return rd;
}


/* the worker exits: hiredis' contexts are freed, their fds closed */

ngx_int_t
ngx_http_tokenrefresh_redis_exit(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_uint_t                      i;
    ngx_http_tokenrefresh_redis_t  *rd;

    for (i = 0; i < 2; i++) {
        rd = i ? zone->redis_sub : zone->redis;

        if (rd == NULL) {
            continue;
        }

        rd->exiting = 1;

        if (rd->reconnect.timer_set) {
            ngx_del_timer(&rd->reconnect);
        }

        if (rd->deadline.timer_set) {
            ngx_del_timer(&rd->deadline);
        }

        if (rd->slow.timer_set) {
            ngx_del_timer(&rd->slow);
        }

        if (rd->ac) {
            redisAsyncFree(rd->ac);
            rd->ac = NULL;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_redis_connect(ngx_http_tokenrefresh_redis_t *rd)
{
    u_char            *p, *last;
    ngx_int_t          port;
    ngx_uint_t         level;
    ngx_connection_t  *c;
    redisAsyncContext *ac;
    u_char             host[NGX_SOCKADDR_STRLEN + 1];

    if (rd->reconnect.handler == NULL) {
        rd->reconnect.handler = ngx_http_tokenrefresh_redis_retry;
        rd->reconnect.data = rd;
        rd->reconnect.log = rd->log;
        rd->reconnect.cancelable = 1;
        rd->backoff = 100;
    }

    p = rd->conf->addr.data;
    last = p + rd->conf->addr.len;

    if (rd->conf->addr.len > 5 && ngx_strncmp(p, "unix:", 5) == 0) {
        ac = redisAsyncConnectUnix((char *) p + 5);

    } else {
        /* "ip:port", checked by the configuration: no name to resolve */

        for (p = last; p > rd->conf->addr.data && p[-1] != ':'; p--) {
            /* void */
        }

        port = ngx_atoi(p, last - p);
        ngx_cpystrn(host, rd->conf->addr.data,
                    ngx_min((size_t) (p - rd->conf->addr.data),
                            sizeof(host)));

        ac = redisAsyncConnect((char *) host, (int) port);
    }

    if (ac == NULL) {
        return NGX_ERROR;
    }

    if (ac->err) {
        level = (rd->down || rd->subscriber) ? NGX_LOG_INFO : NGX_LOG_ERR;
        ngx_log_error(level, rd->log, 0,
                      "tokenrefresh: cannot connect to redis \"%V\": %s",
                      &rd->conf->addr, ac->errstr);
        rd->down = 1;
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c->data = rd;
    c->read->handler = ngx_http_tokenrefresh_redis_read;
    c->write->handler = ngx_http_tokenrefresh_redis_write;
    c->read->log = rd->log;
    c->write->log = rd->log;

    rd->ac = ac;
    rd->c = c;

    ac->data = rd;
    ac->ev.data = rd;
    ac->ev.addRead = ngx_http_tokenrefresh_redis_add_read;
    ac->ev.delRead = ngx_http_tokenrefresh_redis_del_read;
    ac->ev.addWrite = ngx_http_tokenrefresh_redis_add_write;
    ac->ev.delWrite = ngx_http_tokenrefresh_redis_del_write;
    ac->ev.cleanup = ngx_http_tokenrefresh_redis_cleanup;

    (void) redisAsyncSetConnectCallback(ac,
                                    ngx_http_tokenrefresh_redis_connected);
    (void) redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_tokenrefresh_redis_disconnected);

    /* the connect completes when the socket is writable */
    ngx_http_tokenrefresh_redis_add_write(rd);

    rd->deadline.handler = ngx_http_tokenrefresh_redis_too_slow;
    rd->deadline.data = rd;
    rd->deadline.log = rd->log;
    rd->deadline.cancelable = 1;
    ngx_add_timer(&rd->deadline, rd->conf->timeout);

    return NGX_OK;
}


static void
ngx_http_tokenrefresh_redis_read(ngx_event_t *ev)
{
    ngx_connection_t               *c = ev->data;
    ngx_http_tokenrefresh_redis_t  *rd = c->data;

    redisAsyncHandleRead(rd->ac);
}


static void
ngx_http_tokenrefresh_redis_write(ngx_event_t *ev)
{
    ngx_connection_t               *c = ev->data;
    ngx_http_tokenrefresh_redis_t  *rd = c->data;

    redisAsyncHandleWrite(rd->ac);
}


static void
ngx_http_tokenrefresh_redis_add_read(void *data)
{
    ngx_http_tokenrefresh_redis_t *rd = data;

    if (!rd->c->read->active) {
        (void) ngx_add_event(rd->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_tokenrefresh_redis_del_read(void *data)
{
    ngx_http_tokenrefresh_redis_t *rd = data;

    if (rd->c->read->active) {
        (void) ngx_del_event(rd->c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_tokenrefresh_redis_add_write(void *data)
{
    ngx_http_tokenrefresh_redis_t *rd = data;

    if (!rd->c->write->active) {
        (void) ngx_add_event(rd->c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_tokenrefresh_redis_del_write(void *data)
{
    ngx_http_tokenrefresh_redis_t *rd = data;

    if (rd->c->write->active) {
        (void) ngx_del_event(rd->c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis is about to close the descriptor: give the connection back */

static void
ngx_http_tokenrefresh_redis_cleanup(void *data)
{
    ngx_http_tokenrefresh_redis_t *rd = data;

    ngx_connection_t  *c;

    c = rd->c;

    if (c == NULL) {
        return;
    }

    ngx_http_tokenrefresh_redis_del_read(rd);
    ngx_http_tokenrefresh_redis_del_write(rd);

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);

    rd->c = NULL;
}


static void
ngx_http_tokenrefresh_redis_connected(const redisAsyncContext *ac,
    int status)
{
    ngx_http_tokenrefresh_redis_t *rd = ac->data;

    ngx_uint_t  level;

    if (rd->deadline.timer_set) {
        ngx_del_timer(&rd->deadline);
    }

    if (status != REDIS_OK) {

        /* an outage is said once, not at every attempt */

        level = (rd->down || rd->subscriber) ? NGX_LOG_INFO : NGX_LOG_ERR;
        ngx_log_error(level, rd->log, 0,
                      "tokenrefresh: cannot connect to redis \"%V\": %s",
                      &rd->conf->addr, ac->errstr);
        rd->down = 1;

        /* hiredis frees the context after this callback */
        rd->ac = NULL;
        ngx_add_timer(&rd->reconnect, rd->backoff);
        return;
    }

    /*
     * AUTH and SELECT first: hiredis sends commands in order, so nothing
     * queued after them runs unauthenticated or in the wrong database
     */

    if (rd->conf->password.len) {
        (void) redisAsyncCommand((redisAsyncContext *) ac,
                                 ngx_http_tokenrefresh_redis_ready,
                                 (void *) "AUTH", "AUTH %b",
                                 rd->conf->password.data,
                                 rd->conf->password.len);
    }

    if (rd->conf->db) {
        (void) redisAsyncCommand((redisAsyncContext *) ac,
                                 ngx_http_tokenrefresh_redis_ready,
                                 (void *) "SELECT", "SELECT %d",
                                 (int) rd->conf->db);
    }

    (void) redisAsyncCommand((redisAsyncContext *) ac,
                             ngx_http_tokenrefresh_redis_ready,
                             NULL, "PING");
}


/* the answers to AUTH and SELECT; the PING's says the client is ready */

static void
ngx_http_tokenrefresh_redis_ready(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply                     *reply = r;
    ngx_http_tokenrefresh_redis_t  *rd = ac->data;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* said once per outage: it is tried again every 5 s */

        ngx_log_error(((rd->down || rd->subscriber) ? NGX_LOG_INFO
                                                    : NGX_LOG_ERR),
                      rd->log, 0,
                      "tokenrefresh: redis \"%V\" refused %s: %*s",
                      &rd->conf->addr, data ? (char *) data : "PING",
                      (size_t) reply->len, reply->str);

        rd->down = 1;

        redisAsyncDisconnect(ac);
        return;
    }

    if (data) {
        return;
    }

    rd->down = 0;
    rd->backoff = 100;

    if (rd->subscriber) {
        (void) redisAsyncCommand(ac, ngx_http_tokenrefresh_redis_message,
                                 rd, "SUBSCRIBE %b",
                                 rd->zone->redis_channel.data,
                                 rd->zone->redis_channel.len);
        return;
    }

    ngx_http_tokenrefresh_redis_up_down(rd, 1);

    ngx_http_tokenrefresh_fleet_connected(rd->zone);

    ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                  "tokenrefresh: connected to redis \"%V\"",
                  &rd->conf->addr);
}


static void
ngx_http_tokenrefresh_redis_disconnected(const redisAsyncContext *ac,
    int status)
{
    ngx_http_tokenrefresh_redis_t *rd = ac->data;

    if (!rd->subscriber) {
        ngx_http_tokenrefresh_redis_up_down(rd, 0);
    }

    rd->ac = NULL;
    rd->connected = 0;

    if (rd->exiting) {
        /* the worker exits and closed it: nothing was lost */
        return;
    }

    if (rd->slow.timer_set) {
        ngx_del_timer(&rd->slow);
    }

    ngx_log_error(((rd->down || rd->subscriber) ? NGX_LOG_INFO
                                                : NGX_LOG_ERR),
                  rd->log, 0,
                  "tokenrefresh: the connection to redis \"%V\" was lost%s%s",
                  &rd->conf->addr, status != REDIS_OK ? ": " : "",
                  status != REDIS_OK ? ac->errstr : "");
    rd->down = 1;

    if (!ngx_exiting && !ngx_terminate && !rd->exiting) {
        ngx_add_timer(&rd->reconnect, rd->backoff);
    }
}


static void
ngx_http_tokenrefresh_redis_retry(ngx_event_t *ev)
{
    ngx_http_tokenrefresh_redis_t *rd = ev->data;

    /* at most 2 s: a node must claim its leases within the settling time */
    rd->backoff = ngx_min(rd->backoff * 2, 2000);

    if (ngx_http_tokenrefresh_redis_connect(rd) != NGX_OK) {
        ngx_add_timer(&rd->reconnect, rd->backoff);
    }
}


/* a connect or a command took too long: the connection goes */

static void
ngx_http_tokenrefresh_redis_too_slow(ngx_event_t *ev)
{
    ngx_http_tokenrefresh_redis_t *rd = ev->data;

    ngx_log_error((rd->subscriber ? NGX_LOG_INFO : NGX_LOG_ERR), rd->log, 0,
                  "tokenrefresh: redis \"%V\" did not answer in time",
                  &rd->conf->addr);

    /* every pending callback gets a NULL reply, then the cleanup hook */

    if (rd->ac) {
        redisAsyncDisconnect(rd->ac);
    }
}


static void
ngx_http_tokenrefresh_redis_up_down(ngx_http_tokenrefresh_redis_t *rd,
    ngx_uint_t up)
{
    ngx_atomic_t  *slot;

    if (rd->connected == up) {
        return;
    }

    rd->connected = up;

    /*
     * a slot per worker number, not a count: a worker killed while
     * connected is replaced by one with its number, which takes its slot
     */

    slot = &rd->stats->worker[ngx_worker % NGX_HTTP_TOKENREFRESH_FLEET_SLOTS];

    if (up) {
        *slot = (ngx_atomic_uint_t) ngx_pid;

    } else {
        (void) ngx_atomic_cmp_set(slot, (ngx_atomic_uint_t) ngx_pid, 0);
        (void) ngx_atomic_fetch_add(&rd->stats->lost, 1);
    }
}


/* whether this worker's connection is ready for commands */

ngx_uint_t
ngx_http_tokenrefresh_redis_up(ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_http_tokenrefresh_redis_t  *rd = zone->redis;

    return rd && rd->ac && rd->connected;
}


/*
 * EVAL script nkeys args...: the values go as binary-safe arguments.  The
 * handler gets the reply (a redisReply, valid during the call only), or
 * NULL if the connection went first; NGX_DECLINED: not connected.
 */

ngx_int_t
ngx_http_tokenrefresh_redis_eval(ngx_http_tokenrefresh_zone_t *zone,
    const char *script, ngx_uint_t nkeys, ngx_str_t *args, ngx_uint_t nargs,
    void (*handler)(void *data, void *reply), void *data)
{
    u_char                              nk[NGX_INT_T_LEN];
    size_t                              lens[16];
    ngx_uint_t                          i;
    const char                         *argv[16];

    if (nargs > 13) {
        return NGX_DECLINED;
    }

    argv[0] = "EVAL";
    lens[0] = 4;
    argv[1] = script;
    lens[1] = ngx_strlen(script);
    argv[2] = (char *) nk;
    lens[2] = ngx_sprintf(nk, "%ui", nkeys) - nk;

    for (i = 0; i < nargs; i++) {
        argv[3 + i] = (char *) args[i].data;
        lens[3 + i] = args[i].len;
    }

    return ngx_http_tokenrefresh_redis_send(zone, 3 + nargs, argv, lens,
                                            handler, data);
}


/*
 * WAIT replicas timeout: blocks this connection until that many replicas
 * have what it wrote, or the time has passed; the reply is their number
 */

ngx_int_t
ngx_http_tokenrefresh_redis_wait(ngx_http_tokenrefresh_zone_t *zone,
    ngx_uint_t replicas, ngx_msec_t timeout,
    void (*handler)(void *data, void *reply), void *data)
{
    u_char       n[NGX_INT_T_LEN], t[NGX_INT_T_LEN];
    size_t       lens[3];
    const char  *argv[3];

    argv[0] = "WAIT";
    lens[0] = 4;
    argv[1] = (char *) n;
    lens[1] = ngx_sprintf(n, "%ui", replicas) - n;
    argv[2] = (char *) t;
    lens[2] = ngx_sprintf(t, "%M", timeout) - t;

    return ngx_http_tokenrefresh_redis_send(zone, 3, argv, lens, handler,
                                            data);
}


static ngx_int_t
ngx_http_tokenrefresh_redis_send(ngx_http_tokenrefresh_zone_t *zone,
    ngx_uint_t argc, const char **argv, size_t *lens,
    void (*handler)(void *data, void *reply), void *data)
{
    ngx_http_tokenrefresh_redis_t      *rd;
    ngx_http_tokenrefresh_redis_call_t *call;

    rd = zone->redis;

    if (!ngx_http_tokenrefresh_redis_up(zone)) {
        return NGX_DECLINED;
    }

    call = ngx_alloc(sizeof(ngx_http_tokenrefresh_redis_call_t), rd->log);
    if (call == NULL) {
        return NGX_ERROR;
    }

    call->rd = rd;
    call->handler = handler;
    call->data = data;
    call->sent = ngx_current_msec;

    if (redisAsyncCommandArgv(rd->ac, ngx_http_tokenrefresh_redis_reply,
                              call, (int) argc, argv, lens)
        != REDIS_OK)
    {
        ngx_free(call);
        return NGX_DECLINED;
    }

    rd->pending++;

    if (!rd->slow.timer_set) {
        rd->slow.handler = ngx_http_tokenrefresh_redis_too_slow;
        rd->slow.data = rd;
        rd->slow.log = rd->log;
        /* what is pending (a store) is answered before a graceful exit */
        rd->slow.cancelable = 0;
        ngx_add_timer(&rd->slow, rd->conf->timeout);
    }

    return NGX_OK;
}


static void
ngx_http_tokenrefresh_redis_reply(redisAsyncContext *ac, void *r, void *data)
{
    ngx_http_tokenrefresh_redis_call_t *call = data;

    redisReply                     *reply = r;
    ngx_http_tokenrefresh_redis_t  *rd;

    rd = call->rd;

    if (rd->pending) {
        rd->pending--;
    }

    if (rd->pending == 0 && rd->slow.timer_set) {
        ngx_del_timer(&rd->slow);

    } else if (rd->pending) {
        ngx_add_timer(&rd->slow, rd->conf->timeout);
    }

    if (reply) {
        (void) ngx_atomic_cmp_set(&rd->stats->rtt, rd->stats->rtt,
                                  ngx_current_msec - call->sent);

        if (reply->type == REDIS_REPLY_ERROR) {
            (void) ngx_atomic_fetch_add(&rd->stats->errors, 1);
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "tokenrefresh: redis \"%V\" answered an error: %*s",
                          &rd->conf->addr, (size_t) reply->len, reply->str);
        }
    }

    call->handler(call->data, reply);

    ngx_free(call);
}


/*
 * The subscriber's replies: its SUBSCRIBE confirmed (announcements made
 * while nobody listened are unknown: the zone's fleet epoch moves on, and
 * every token is checked once more), then each message
 */

static void
ngx_http_tokenrefresh_redis_message(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply                     *reply = r;
    ngx_http_tokenrefresh_redis_t  *rd = data;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    if (reply->element[0]->len == sizeof("subscribe") - 1
        && ngx_strncmp(reply->element[0]->str, "subscribe",
                       sizeof("subscribe") - 1)
           == 0)
    {
        rd->connected = 1;
        (void) ngx_atomic_fetch_add(&rd->stats->epoch, 1);

        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "tokenrefresh: subscribed to the fleet's channel "
                      "\"%V\" of redis \"%V\"", &rd->zone->redis_channel,
                      &rd->conf->addr);
        return;
    }

    ngx_http_tokenrefresh_fleet_message(rd->zone, reply);
}
