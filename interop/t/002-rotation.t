# Scenario 2: rotating refresh tokens with a real provider.
#
# A refresh token from a scripted authorization-code + PKCE login (consent
# to offline_access) is the credential's seed; the credential has no login
# of its own.  oidc-provider rotates the refresh token at every refresh and,
# if a spent one ever comes back, revokes the whole grant: one refresh
# token sent twice, or lost, and every request fails from then on.
#
# Access tokens live 4 seconds.  Each cycle makes the module refresh once,
# in one of four ways, while 30 clients use the credential through two
# workers: the API rejects the current token (401, replay), the operator's
# control (POST /status ... action=refresh), the refresh ahead of expiry
# (background), the token's expiry (every request waits).  After every
# fourth cycle nginx is stopped, gracefully or killed, and started: the
# state file keeps the newest refresh token.
#
# At the provider: exactly one refresh per cycle, never two at once, no
# reuse detected, the grant alive; every request answered 200.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use lib '.';
use t::Interop;
use Test::Nginx::Socket 'no_plan';

master_on();
workers(2);
worker_connections(1024);
no_shuffle();

my $TTL = 4;
my $CYCLES = $ENV{INTEROP_CYCLES} || 24;
my $CLIENTS = $ENV{INTEROP_CLIENTS} || 30;

op_ttl('crm-gateway' => $TTL);
put('key', random_key() . "\n");
put('seed-carol', login_seed('carol') . "\n");

sub rotation {
    my %refreshed_at;   # the time each refresh was seen at the provider
    my $t_ref;
    my $refreshes = 0;

    my $wait_refreshes = sub {
        my ($n, $what) = @_;
        my $ok = wait_until(sub { (op_stats()->{ok}{refresh_token} // 0) >= $n }, 10);
        $t_ref = time;
        ok(settled('rot', 'crm'), "$what: no refresh in flight");
        return $ok;
    };

    my $r = hit(GET => '/crm/first');
    is($r->{status}, 200, 'the seed was refreshed');
    is($r->{json}{sub}, 'carol', 'the token of the login');
    $wait_refreshes->(++$refreshes, 'first');

    my ($served, $failed, $restarts) = (0, 0, 0);
    my @kinds = qw(reject operator ahead expire);
    my %why;
    my $jti = $r->{json}{jti};

    for my $cycle (1 .. $CYCLES) {
        my $kind = $kinds[($cycle - 1) % @kinds];

        if ($kind eq 'reject') {
            api_revoke();
        } elsif ($kind eq 'operator') {
            my $c = hit(POST => '/status?zone=rot&credential=crm&action=refresh');
            $failed++, $why{operator}++ unless $c->{status} == 200;
        } elsif ($kind eq 'ahead') {
            # in the last half of the token's life, not expired
            my $d = $t_ref + $TTL * 0.65 - time;
            sleep $d if $d > 0;
        } else {
            my $d = $t_ref + $TTL + 0.3 - time;
            sleep $d if $d > 0;
        }

        my $unauthorized = api_stats()->{unauthorized};
        my $old = 0;
        for my $res (storm(n => $CLIENTS, uri => "/crm/$cycle/")) {
            $old++ if ($res->{json}{jti} // '') eq $jti;
            if ($res->{status} == 200 && ($res->{json}{sub} // '') eq 'carol') {
                $served++;
            } else {
                $failed++;
                $why{"$kind: $res->{status}"}++;
            }
        }

        $unauthorized = api_stats()->{unauthorized} - $unauthorized;
        if ($kind eq 'reject') {
            cmp_ok($unauthorized, '>', 0, "cycle $cycle ($kind): the API rejected the token");
            is($old, 0, "cycle $cycle ($kind): no answer with the rejected token");
        } elsif ($kind eq 'ahead') {
            is($unauthorized, 0, "cycle $cycle ($kind): no token rejected");
            cmp_ok($old, '>', 0, "cycle $cycle ($kind): requests went on with the current token");
        } else {
            is($unauthorized, 0, "cycle $cycle ($kind): no request sent with a stale token");
            is($old, 0, "cycle $cycle ($kind): every request waited for the new token");
        }

        my $before = op_stats()->{ok}{refresh_token} // 0;
        ok($wait_refreshes->(++$refreshes, "cycle $cycle ($kind)"),
           "cycle $cycle ($kind): refreshed");
        my $s = op_stats();
        is($s->{by_grant}{refresh_token}, $refreshes,
           "cycle $cycle ($kind): exactly one refresh")
            or diag("refreshes before the wait: $before");

        my $now = hit(GET => "/crm/$cycle/after")->{json} // {};
        isnt($now->{jti} // '', $jti, "cycle $cycle ($kind): a new access token");
        $jti = $now->{jti} // '';

        if ($cycle % 4 == 0) {
            restart_nginx($restarts % 2 ? 'KILL' : 'QUIT');
            $restarts++;
        }
    }

    is($failed, 0, 'no failed request') or diag explain \%why;
    is($served, $CYCLES * $CLIENTS, 'every request served');
    is($restarts, int($CYCLES / 4), 'restarts');

    my $s = op_stats();
    is($s->{ok}{refresh_token}, $CYCLES + 1, 'one refresh per cycle (and the seed\'s)');
    is($s->{rotations}, $CYCLES + 1, 'each one rotated the refresh token');
    is($s->{reuse}, 0, 'no refresh token was sent twice');
    is($s->{revoked_grants}, 0, 'the provider revoked no grant');
    is_deeply($s->{errors}, {}, 'no error at the provider');
    is($s->{max_inflight}, 1, 'never two token requests at once');
    is_deeply($s->{duplicate_headers}, {}, 'no header sent twice');
    is(scalar(grep { $_->{account} eq 'carol' } @{ op_grants() }), 1,
       'the grant is alive');
}

no warnings 'once';
*Test::Nginx::Util::rotation = \&rotation;

run_tests();

__DATA__

=== TEST 1: rotating refresh tokens: cycles, restarts, two workers, concurrent clients
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/rot.state
                             key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rot crm $TEST_NGINX_STATE_DIR/seed-carol;
--- config
    location /crm/ {
        tokenrefresh rot crm;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://api;
    }

    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form&client_id=crm-gateway&client_secret=crm-gateway-secret-0123456789abcdef";
        proxy_pass http://op/token;
    }
--- init
rotation();
--- request
GET /crm/last
--- response_body_like: "sub":"carol"
--- error_log eval
qr/credential "crm" seeded from ".*seed-carol"/
--- no_error_log
[error]
[crit]
--- timeout: 240
