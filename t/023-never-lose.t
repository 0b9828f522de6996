# A refresh token is never lost and never sent twice: not by a reload that
# resizes a zone during a refresh, not by a late refusal of a token that
# was replaced meanwhile, not by eviction from a full zone, not by a state
# file restored into a zone too small for it.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use File::Temp ();

master_on();
workers(2);
worker_connections(1024);
no_shuffle();

my $dir = File::Temp::tempdir('tokenrefresh-nl-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
$ENV{TEST_NGINX_STATE_DIR} = $dir;

sub put {
    my ($name, $content) = @_;
    my $f = "$dir/$name";
    open my $fh, '>', $f or die "$f: $!";
    print $fh $content;
    close $fh;
    chmod 0600, $f;
    return $f;
}

sub slurp {
    my ($f) = @_;
    open my $fh, '<:raw', $f or return undef;
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s;
}

# rewrites the configuration nginx runs with: s/$from/$to/
sub edit_conf {
    my ($from, $to) = @_;
    my $conf = $Test::Nginx::Util::ConfFile;
    my $text = slurp($conf);
    $text =~ s/$from/$to/ or die "\"$from\" not in $conf";
    open my $out, '>', $conf or die "$conf: $!";
    print $out $text;
    close $out;
}

put('key', join('', map { sprintf '%02x', int rand 256 } 1 .. 32) . "\n");
put('seed-a', "seed-a-token\n");
put('seed-c', "seed-c-token\n");
put("seed-s$_", "seed-s$_-" . ('x' x 900) . "\n") for 1 .. 40;

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_ for qw(put slurp edit_conf);
    *Test::Nginx::Util::state_dir = sub { $dir };
}

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('config', <<'_EOC_' . $block->config);
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location = /status {
        tokenrefresh_status;
    }
_EOC_
});

run_tests();

__DATA__

=== TEST 1: a reload that resizes the zone while a refresh is in flight: the new zone gets its result
The old workers finish the refresh; the new zone must take its rotated
refresh token, not the older one the state file had at the reload.
--- http_config
    tokenrefresh_zone rs:1m state=$TEST_NGINX_STATE_DIR/t1.state
                            key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh rs billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
revoke();
mock(delay_ms => 1500);
my $h = fire(GET => '/api/b');
ok(wait_until(sub { calls() =~ /refresh_token=1/ }, 5), 'a refresh in flight');
edit_conf(qr/tokenrefresh_zone rs:1m/, 'tokenrefresh_zone rs:2m');
reload_nginx();
mock(delay_ms => 0);
is(collect($h)->{status}, 200, 'the request that waited for it is served');
revoke();
my $r = hit(GET => '/api/c');
is($r->{status}, 200, 'the new workers refresh with the rotated token');
like($r->{content}, qr/"token_n":5\b/, 'a new token');
--- request
GET /calls
--- response_body
calls=3 client_credentials=1 refresh_token=2
--- no_error_log
[crit]
[alert]
--- timeout: 40



=== TEST 2: a late refusal drops only the refresh token it refused, not a new seed given meanwhile
--- http_config
    tokenrefresh_zone sd:1m;
    tokenrefresh_seed sd billing $TEST_NGINX_STATE_DIR/seed-a;
--- config
    location /api/ {
        tokenrefresh sd billing;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
control('grant', { cred => 'billing', refresh_token => 'seed-a-token' });
mock(fault => 'invalid_grant', fault_count => 1, delay_ms => 1500);
my $h = fire(GET => '/api/a');
ok(wait_until(sub { calls() =~ /refresh_token=1/ }, 5),
   'the refresh with seed A is at the provider');
# the operator logs in again and gives a new seed
my $new = control('grant', { cred => 'billing' })->{refresh_token};
put('seed-b', "$new\n");
edit_conf(qr{seed-a;}, 'seed-b;');
reload_nginx();
isnt(collect($h)->{status}, 200, 'seed A was refused');
mock(delay_ms => 0);
my $r = hit(GET => '/api/b');
is($r->{status}, 200, 'seed B is used');
--- request
GET /calls
--- response_body
calls=2 refresh_token=2
--- error_log
seeded from
--- timeout: 40



=== TEST 3: a flood of other credentials never evicts one whose refresh token is the only copy
The seeded credential has no login: losing its refresh token would lose
it for good.  Three hundred other credentials, that can log in again,
come and go through the same small zone.
--- http_config
    tokenrefresh_zone small:32k max_token_size=1k
                      state=$TEST_NGINX_STATE_DIR/t3.state
                      key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed small seeded $TEST_NGINX_STATE_DIR/seed-c;
--- config
    location /s/ {
        tokenrefresh small seeded;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location /api/ {
        tokenrefresh small $arg_c;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
control('grant', { cred => 'seeded', refresh_token => 'seed-c-token' });
my @st = map { hit(GET => "/api/x?c=flood$_")->{status} } 1 .. 300;
is(scalar(grep { $_ == 200 } @st), 300, 'all 300 served');
ok(scalar(grep { /evicting idle credential "flood/ } error_log_since(0)),
   'others were evicted');
is(hit(GET => '/s/x')->{status}, 200, 'the seeded credential is served');
restart_nginx('QUIT');
revoke();
is(hit(GET => '/s/y')->{status}, 200, 'and after a restart and a revocation');
--- request
GET /calls
--- response_body_like
^calls=302 client_credentials=300 refresh_token=2
--- no_error_log
evicting idle credential "seeded"
--- timeout: 60



=== TEST 4: a state file that does not fit a smaller zone restores nothing, evicts nothing, and is kept
--- http_config
    tokenrefresh_zone big:1m max_token_size=1k
                      state=$TEST_NGINX_STATE_DIR/t4.state
                      key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh big $arg_c;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $state = state_dir() . '/t4.state';
my @st = map { hit(GET => "/api/x?c=c$_")->{status} } 1 .. 60;
is(scalar(grep { $_ == 200 } @st), 60, '60 credentials');
stop_nginx('QUIT');
edit_conf(qr/tokenrefresh_zone big:1m/, 'tokenrefresh_zone big:32k');
my $log0 = error_log_size();
start_nginx();
my @log = error_log_since($log0);
ok(scalar(grep { /does not fit/ } @log), 'the log says the file does not fit')
    or diag(join '', grep { /tokenrefresh/ } @log);
ok(!scalar(grep { /evicting/ } @log), 'nothing evicted');
ok(-e "$state.rejected", 'the file is kept aside');
is(hit(GET => '/api/x?c=c1')->{status}, 200, 'the smaller zone serves');
# the operator gives the zone its size back, and the file
stop_nginx('QUIT');
edit_conf(qr/tokenrefresh_zone big:32k/, 'tokenrefresh_zone big:1m');
rename "$state.rejected", $state or die;
$log0 = error_log_size();
start_nginx();
ok(scalar(grep { /60 credentials of zone "big" restored/ } error_log_since($log0)),
   'every credential is back');
--- request
GET /api/x?c=c60
--- response_body_like: "cred":"c60"
--- timeout: 60



=== TEST 5: a full zone where every credential holds its only refresh token: a new credential gets 503, nothing is evicted
--- http_config eval
"tokenrefresh_zone small:32k max_token_size=1k;\n"
. join '', map { "    tokenrefresh_seed small s$_ \$TEST_NGINX_STATE_DIR/seed-s$_;\n" } 1 .. 40
--- config
    location /s/ {
        tokenrefresh small $arg_c;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location /api/ {
        tokenrefresh small $arg_c;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
for my $i (1 .. 40) {
    control('grant', { cred => "s$i", refresh_token => "seed-s$i-" . ('x' x 900) });
}
my $r = hit(GET => '/api/x?c=newcomer');
is($r->{status}, 503, 'the newcomer gets 503');
my @seeded = grep { /credential "s\d+" seeded/ } error_log_since(0);
ok(@seeded > 5, scalar(@seeded) . ' seeds fit');
my @ok = grep { hit(GET => "/s/x?c=$_")->{status} == 200 }
         map { /credential "(s\d+)" seeded/ } @seeded;
is(scalar @ok, scalar @seeded, 'every seeded credential is still served');
my $st = JSON::PP::decode_json(hit(GET => '/status')->{content});
cmp_ok($st->{zones}{small}{evictions_refused}, '>=', 1,
       'the status page counts the evictions refused');
is($st->{zones}{small}{evictions}, 0, 'and nothing was evicted');
--- request
GET /calls
--- response_body_like
^calls=\d+ refresh_token=\d+
--- no_error_log
evicting idle credential "s
--- timeout: 60



=== TEST 6: a rotated token handed over by a resizing reload survives kill -9: the new zone's snapshot is not older than the old zone's frames
--- http_config
    tokenrefresh_zone rs6:1m state=$TEST_NGINX_STATE_DIR/t6.state
                             key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh rs6 billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
revoke();
is(hit(GET => '/api/b')->{status}, 200, 'a refresh: its frame is in the journal');
revoke();
mock(delay_ms => 1500);
my $h = fire(GET => '/api/c');
ok(wait_until(sub { calls() =~ /refresh_token=2/ }, 5), 'a refresh in flight');
my $state = state_dir() . '/t6.state';
my $inode = (stat $state)[1];
edit_conf(qr/tokenrefresh_zone rs6:1m/, 'tokenrefresh_zone rs6:2m');
reload_nginx();
mock(delay_ms => 0);
is(collect($h)->{status}, 200, 'handed over to the new zone');
# the new zone takes the outcome in and writes a whole snapshot
ok(wait_until(sub { ((stat $state)[1] // 0) != $inode }, 10),
   'the new zone wrote its snapshot');
restart_nginx('KILL');
revoke();
is(hit(GET => '/api/d')->{status}, 200, 'after kill -9, a refresh');
is(stats()->{reuse}, 0, 'with the newest refresh token: none sent twice');
--- request
GET /calls
--- response_body
calls=4 client_credentials=1 refresh_token=3
--- no_error_log
[crit]
[alert]
--- timeout: 40
