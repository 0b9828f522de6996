# Tokens live in the shared zone and survive "nginx -s reload": no new
# login after a reload.  A reload that changes the zone's size starts from
# an empty zone.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use POSIX ();

master_on();
workers(2);
worker_connections(2048);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a reload keeps the tokens
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/api/a');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
my @old = worker_pids();
is(scalar @old, 2, 'two workers');
kill 'HUP', master_pid();
my %old = map { $_ => 1 } @old;
ok(wait_until(sub {
    my @now = worker_pids();
    return @now == 2 && !grep { $old{$_} } @now;
}, 10), 'the old workers were replaced');
--- request eval
["GET /api/b", "GET /api/c", "GET /calls"]
--- response_body_like eval
[qr/"token_n":1\b/, qr/"token_n":1\b/, "^calls=1 client_credentials=1\n\$"]
--- no_error_log
[error]



=== TEST 2: a reload during a storm loses no request, keeps the token
250 requests wait for a login that takes 500 ms; the reload happens while
they wait.  The old workers finish them; the new workers find the token.
--- main_config
    worker_rlimit_nofile 10000;
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(delay_ms => 500);
my @old = worker_pids();
my $master = master_pid();
my $pid = fork;
die "fork: $!" unless defined $pid;
if ($pid == 0) {
    # the reload, as soon as the login is in flight
    wait_until(sub { calls() =~ /client_credentials=1/ }, 10);
    kill 'HUP', $master;
    POSIX::_exit(0);
}
my @res = storm(requests => [ map { { method => 'GET', uri => "/api/$_" } }
                              1 .. 250 ]);
waitpid $pid, 0;
my @st = grep { $_->{status} == 200 } @res;
is(scalar @st, 250, 'every request was answered with 200');
my %old = map { $_ => 1 } @old;
ok(wait_until(sub {
    my @now = worker_pids();
    return @now == 2 && !grep { $old{$_} } @now;
}, 10), 'the old workers finished and exited');
mock(delay_ms => 0);
--- request eval
["GET /api/after", "GET /calls"]
--- response_body_like eval
[qr/"token_n":1\b/, "^calls=1 client_credentials=1\n\$"]
--- no_error_log
[error]
--- timeout: 30



=== TEST 3: a reload that changes the zone's size keeps its credentials
The new zone is a copy of the zone it replaces: the token stays, no login.
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/api/a');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
my $conf = $Test::Nginx::Util::ConfFile;
open my $in, '<', $conf or die "$conf: $!";
my $text = do { local $/; <$in> };
close $in;
$text =~ s/tokenrefresh_zone tokens:1m;/tokenrefresh_zone tokens:2m;/ or die;
open my $out, '>', $conf or die "$conf: $!";
print $out $text;
close $out;
my %old = map { $_ => 1 } worker_pids();
kill 'HUP', master_pid();
ok(wait_until(sub {
    my @now = worker_pids();
    return @now == 2 && !grep { $old{$_} } @now;
}, 10), 'reloaded');
--- request eval
["GET /api/b", "GET /calls"]
--- response_body_like eval
[qr/"token_n":1\b/, "^calls=1 client_credentials=1\n\$"]
--- error_log
resized from 1048576 to 2097152 bytes, 1 credentials taken from the zone it replaces
--- no_error_log
[error]
