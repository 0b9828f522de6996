package t::TokenRefresh;

# Test::Nginx glue for ngx_http_tokenrefresh_module.
#
# Loading this module
#   - starts the mock identity provider and API (t/lib/mock_server.pl) as
#     a process of its own, and stops it when the test file ends;
#   - exports to the test file (and to "--- init" code): mock(), calls(),
#     stats(), storm(), error_log_since(), pids_in() and wait_until();
#   - prepends to every block's http_config the shared zone and the two
#     upstreams, and resets the mock before every block:
#
#       tokenrefresh_zone tokens:1m;
#       upstream idp { server 127.0.0.1:$TEST_NGINX_IDP_PORT; }
#       upstream api { server 127.0.0.1:$TEST_NGINX_API_PORT; keepalive 16; }
#
#   - appends to every block's server config a location that shows the
#     provider's call counts, one line, e.g. "calls=1 client_credentials=1":
#
#       location = /calls { tokenrefresh off; proxy_pass http://<idp>/_mock/calls; }

use Test::Nginx::Socket;

use HTTP::Tiny;
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP);
use Errno qw(EINPROGRESS EAGAIN EWOULDBLOCK EINTR);
use Socket qw(inet_aton pack_sockaddr_in);
use Time::HiRes qw(time sleep);
use Digest::SHA qw(sha256_hex);
use Cwd qw(abs_path);
use File::Basename qw(dirname);

my $base = $ENV{TEST_NGINX_MOCK_PORT} // 19850;

$ENV{TEST_NGINX_IDP_PORT} //= $base;
$ENV{TEST_NGINX_API_PORT} //= $base + 10;
$ENV{TEST_NGINX_H2_PORT} //= $base + 20;    # for an h2c listener
$ENV{TEST_NGINX_DOC_PORT} //= $base + 30;   # for the servers of the docs

my $idp_port = $ENV{TEST_NGINX_IDP_PORT};
my $api_port = $ENV{TEST_NGINX_API_PORT};
my $dir = dirname(abs_path(__FILE__));
my $json = JSON::PP->new->canonical;
my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 0);

my $mock_pid;

sub start_mock {
    $mock_pid = fork;
    die "fork: $!" unless defined $mock_pid;

    if ($mock_pid == 0) {
        exec $^X, "$dir/lib/mock_server.pl", '--idp-port', $idp_port,
             '--api-port', $api_port, '--corpus', "$dir/../fuzz/corpus";
        die "exec: $!";
    }

    # the mock is ready when both ports accept connections
    wait_until(sub {
        for my $p ($idp_port, $api_port) {
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => $p, Timeout => 1)
                or return 0;
            close $s;
        }
        return 1;
    }, 10) or die "mock server did not start on ports $idp_port/$api_port";
}

sub stop_mock {
    return unless $mock_pid;
    kill 'TERM', $mock_pid;
    waitpid $mock_pid, 0;
    undef $mock_pid;
}

# A time bound in a test, stretched under valgrind (TEST_TIME_SCALE).
sub scaled {
    my ($seconds) = @_;
    return $seconds * ($ENV{TEST_TIME_SCALE} || 1);
}

# Polls a condition every few milliseconds; returns its value, or false
# after the timeout.  For conditions that take real time to come true
# (a token expiring, a process exiting), never as a replacement for one.
sub wait_until {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return 0 if time > $deadline;
        sleep 0.005;
    }
}

sub control {
    my ($path, $data) = @_;
    my $res = $http->request('POST', "http://127.0.0.1:$idp_port/_mock/$path",
                             { content => $json->encode($data // {}) });
    die "mock $path: $res->{status} $res->{content}" unless $res->{success};
    return $json->decode($res->{content});
}

# mock(delay_ms => 300, lifetime => 2, ...): change the mock's behaviour
sub mock { return control('config', { @_ }); }

# revoke(cred => 'x'): the API rejects the tokens issued so far
sub revoke { return control('revoke', { @_ }); }

sub stats {
    my $res = $http->get("http://127.0.0.1:$idp_port/_mock/stats");
    return $json->decode($res->{content});
}

sub requests {
    my $res = $http->get("http://127.0.0.1:$idp_port/_mock/requests");
    return $json->decode($res->{content});
}

sub receiving {
    my $res = $http->get("http://127.0.0.1:$idp_port/_mock/receiving");
    return split /\n/, $res->{content};
}

sub calls {
    my $res = $http->get("http://127.0.0.1:$idp_port/_mock/calls");
    chomp(my $line = $res->{content});
    return $line;
}

# hit(GET => "/api/a"): a request to the nginx under test; returns
# { status, content, headers, elapsed }
sub hit {
    my ($method, $uri, %o) = @_;
    my $port = $o{port} // $Test::Nginx::Util::ServerPortForClient;
    my $t0 = time;
    my $res = $http->request($method, "http://127.0.0.1:$port$uri",
                             { headers => $o{headers} // {},
                               defined $o{body} ? (content => $o{body}) : () });
    $res->{elapsed} = time - $t0;
    return $res;
}

sub error_log_since {
    my ($offset) = @_;
    my $file = $Test::Nginx::Util::ErrLogFile;
    open my $fh, '<', $file or return ();
    seek $fh, $offset // 0, 0;
    my @lines = <$fh>;
    close $fh;
    return @lines;
}

sub error_log_size {
    return -s $Test::Nginx::Util::ErrLogFile // 0;
}

# the distinct worker pids among error log lines that match a pattern
sub pids_in {
    my ($re, @lines) = @_;
    my %pids;
    for (@lines) {
        $pids{$1} = 1 if /\[\w+\] (\d+)#\d+: .*$re/;
    }
    return sort keys %pids;
}

sub master_pid {
    my $file = $Test::Nginx::Util::PidFile;
    open my $fh, '<', $file or return undef;
    my $pid = <$fh>;
    close $fh;
    chomp $pid if defined $pid;
    return $pid;
}

# kill 0 also succeeds on a zombie: look at the process state instead
sub alive {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh>;
    close $fh;
    return $stat !~ /^\d+ \(.*\) [ZX] /;
}

sub worker_pids {
    my $master = master_pid() or return ();
    my @pids;
    for my $d (glob '/proc/[0-9]*') {
        open my $fh, '<', "$d/stat" or next;
        my $stat = <$fh>;
        close $fh;
        my ($pid, $ppid) = $stat =~ /^(\d+) \(.*\) \S (\d+)/ or next;
        push @pids, $pid if $ppid == $master;
    }
    return sort @pids;
}

# Opens all connections first, then sends every request at (nearly) the
# same moment, then reads every answer.  Each request is a hash with
# method, uri, optional body and headers.  Returns, in order, hashes with
# status, headers (lower-case names), body and the time it took.
sub storm {
    my (%o) = @_;
    my $reqs = $o{requests};
    my $port = $o{port} // $ENV{TEST_NGINX_SERVER_PORT}
               // $Test::Nginx::Util::ServerPortForClient;
    my $timeout = $o{timeout} // 30;
    my $addr = pack_sockaddr_in($port, inet_aton('127.0.0.1'));
    my $poll = IO::Poll->new;
    my @c;

    for my $i (0 .. $#$reqs) {
        socket(my $s, Socket::PF_INET(), Socket::SOCK_STREAM(), 0)
            or die "socket: $!";
        $s->blocking(0);
        connect($s, $addr) or $! == EINPROGRESS or die "connect: $!";
        my $r = $reqs->[$i];
        my $body = $r->{body} // '';
        my $out = "$r->{method} $r->{uri} HTTP/1.1\r\nHost: localhost\r\n"
                . "Connection: close\r\n";
        $out .= "$_: $r->{headers}{$_}\r\n" for keys %{ $r->{headers} // {} };
        $out .= "Content-Length: " . length($body) . "\r\n"
            if length $body || $r->{method} eq 'POST';
        $out .= "\r\n$body";
        push @c, { sock => $s, out => $out, in => '', i => $i };
        $poll->mask($s => POLLOUT);
    }

    # wait until every connection is established
    my $deadline = time + $timeout;
    my %pending = map { $_ => 1 } 0 .. $#c;
    while (%pending && time < $deadline) {
        $poll->poll(0.5);
        for my $k (keys %pending) {
            delete $pending{$k} if $poll->events($c[$k]{sock}) & POLLOUT;
        }
    }
    die "storm: " . scalar(keys %pending) . " connections not established"
        if %pending;

    # now send them all
    my $t0 = time;
    for my $c (@c) {
        $c->{start} = time;
        my $w = syswrite($c->{sock}, $c->{out});
        substr($c->{out}, 0, $w // 0, '');
        $poll->mask($c->{sock} => length $c->{out} ? POLLOUT : POLLIN);
    }

    my $open = @c;
    while ($open && time < $deadline) {
        $poll->poll(0.5);
        for my $c (@c) {
            next if $c->{done};
            my $ev = $poll->events($c->{sock}) or next;
            if (($ev & POLLOUT) && length $c->{out}) {
                my $w = syswrite($c->{sock}, $c->{out});
                substr($c->{out}, 0, $w // 0, '');
                $poll->mask($c->{sock} => POLLIN) unless length $c->{out};
                next;
            }
            my $n = sysread($c->{sock}, my $buf, 65536);
            next if !defined $n && ($! == EAGAIN || $! == EINTR);
            if ($n) {
                $c->{in} .= $buf;
                next;
            }
            $c->{done} = 1;
            $c->{elapsed} = time - $c->{start};
            $poll->remove($c->{sock});
            close $c->{sock};
            $open--;
        }
    }

    my @res;
    for my $c (@c) {
        my $r = parse_response($c->{in});
        $r->{elapsed} = $c->{elapsed} // -1;
        $r->{timed_out} = !$c->{done};
        push @res, $r;
        close $c->{sock} unless $c->{done};
    }

    return @res;
}

# the fuzz corpus, for t/015-corpus.t
sub corpus_files {
    return sort map { (split m{/})[-1] } glob "$dir/../fuzz/corpus/*";
}

sub parse_response {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw // '', 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my %h;
    for (split /\r\n/, $head // '') {
        $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
    }
    $body //= '';
    if (($h{'transfer-encoding'} // '') =~ /chunked/) {
        my $d = '';
        while ($body =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $d .= substr($body, 0, $len, '');
            $body =~ s/^\r\n//;
        }
        $body = $d;
    }
    return { status => $status // 0, headers => \%h, body => $body };
}

# fire(POST => '/api/a', body => '...'): sends a request and returns at
# once; collect($handle) reads the answer, drop($handle) hangs up.
sub fire {
    my ($method, $uri, %o) = @_;
    my $port = $Test::Nginx::Util::ServerPortForClient;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 5)
        or die "fire: connect: $!";
    my $body = $o{body} // '';
    my $out = "$method $uri HTTP/1.1\r\nHost: localhost\r\n"
            . "Connection: close\r\n";
    $out .= "$_: $o{headers}{$_}\r\n" for keys %{ $o{headers} // {} };
    $out .= "Content-Length: " . length($body) . "\r\n"
        if (length $body || $method eq 'POST')
           && !grep { lc eq 'content-length' } keys %{ $o{headers} // {} };
    $out .= "\r\n$body";
    $s->autoflush(1);
    print $s $out;
    return { sock => $s, start => time };
}

sub collect {
    my ($h, $timeout) = @_;
    my $s = $h->{sock};
    my $in = '';
    my $deadline = time + ($timeout // 20);
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        next unless $sel->can_read(0.5);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $in .= $buf;
    }
    close $s;
    my $r = parse_response($in);
    $r->{elapsed} = time - $h->{start};
    return $r;
}

sub drop {
    my ($h) = @_;
    close $h->{sock};
}

# the requests the mock API got for a path (both attempts of a replay)
sub api_requests {
    my ($path) = @_;
    return grep { $_->{port} eq 'api' && $_->{path} eq $path }
           @{ requests() };
}

for my $f (qw(scaled corpus_files fire collect drop api_requests receiving mock control revoke stats requests calls storm wait_until
              hit
              alive error_log_since error_log_size pids_in master_pid
              worker_pids))
{
    no strict 'refs';
    *{"main::$f"} = \&$f;
    *{"Test::Nginx::Util::$f"} = \&$f;
}

# "--- init" code runs in Test::Nginx::Util: give it Test::More's checks
{
    no strict 'refs';

    # time() with sub-second resolution, as waits for expiry need
    *{"Test::Nginx::Util::time"} = \&Time::HiRes::time;
    *{"main::time"} = \&Time::HiRes::time;

    *{"Test::Nginx::Util::sha256_hex"} = \&Digest::SHA::sha256_hex;
    *{"main::sha256_hex"} = \&Digest::SHA::sha256_hex;
}

for my $f (qw(ok is isnt like unlike cmp_ok is_deeply diag note pass fail))
{
    no strict 'refs';
    no warnings 'redefine';
    *{"Test::Nginx::Util::$f"} = \&{"Test::More::$f"}
        unless defined &{"Test::Nginx::Util::$f"};
    *{"main::$f"} = \&{"Test::More::$f"} unless defined &{"main::$f"};
}

add_block_preprocessor(sub {
    my $block = shift;

    my $http = <<"_EOC_";
tokenrefresh_zone tokens:1m;
upstream idp { server 127.0.0.1:\$TEST_NGINX_IDP_PORT; }
upstream api { server 127.0.0.1:\$TEST_NGINX_API_PORT; keepalive 16; }
_EOC_

    $block->set_value('http_config', $http . ($block->http_config // ''))
        unless $block->no_default_http_config;

    $block->set_value('config', ($block->config // '') . <<'_EOC_');
location = /calls {
    tokenrefresh off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_IDP_PORT/_mock/calls;
}
_EOC_

    $block->set_value('init', 'control("reset"); ' . ($block->init // ''));
});

# error_log checks see the log of all the requests of a block
check_accum_error_log();

start_mock();

add_cleanup_handler(sub { stop_mock() });

END { stop_mock() }

1;
