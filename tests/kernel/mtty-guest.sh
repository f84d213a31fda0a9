# The real-kernel checks, in the VM against real mtty instances (run by tests/kernel/ci.sh:
#   run-vm.sh <static mdevmig> mtty-guest.sh <mttyctl>).
#
#   a  what the device reports: real migration flags and type (mttyctl; `mdevmig
#      describe` too when this build has it), and `mdevmig inspect` of a saved stream
#   b  a source mtty-2 with non-trivial state (SCR on both ports, LCR/IER/MCR/FCR,
#      bytes in both loopback FIFOs with tail != 0) is saved with mdevmig and restored
#      into a fresh mtty-2: registers read back equal; the raw state straight from
#      the kernel (mttyctl save), the raw state in the stream (file backend) and the
#      destination re-saved by mdevmig are byte-identical; finally both FIFOs drain
#      the same bytes
#   c  a tampered chunk, an mtty-2 stream into an mtty-1, and a signed stream with an
#      out-of-range FIFO index are each refused with their code before the kernel is
#      touched: fresh destination, its raw kernel state and registers unchanged, still
#      RUNNING, no kernel log line, and a valid restore into it works afterwards
#   d  save --precopy: 24 bytes during PRE_COPY, raw state identical to the plain save
#   e  (run-vm.sh) no WARNING/BUG/Oops/Call Trace in the kernel log
#   f  a destination left in RESUMING / STOP_COPY / PRE_COPY by a dead process is
#      reset by mdevmig when it opens it, then restored (6.12 oopses otherwise)
#   g  mdevmig live between two real mtty-2s (PRE_COPY rounds as QEMU drives them, then
#      STOP_COPY): exit 0; flags PRE_COPY and P2P; >= 1 round, round 1 > 0 bytes and the
#      kernel's precopy info after it device_initial_bytes=0 (mtty's end of data);
#      precopy_bytes = the sum of the rounds; the source's arcs RUNNING->PRE_COPY,
#      PRE_COPY->PRE_COPY_P2P, PRE_COPY_P2P->STOP_COPY, STOP_COPY->STOP and the
#      destination's STOP->RESUMING, RESUMING->STOP, STOP->RUNNING_P2P,
#      RUNNING_P2P->RUNNING; the kernel leaves the source in STOP and the destination
#      RUNNING; the destination's registers, raw kernel state and FIFO bytes equal the
#      source's (which kept its own); no device was reset
#   h  mdevmig live --abort-after-round 1 (source and destination with different known
#      state): exit 0, aborted; the source's arcs end PRE_COPY->RUNNING, the destination
#      refused the partial stream with an error code and was reset (mtty_reset in the
#      kernel log); both RUNNING in the kernel, registers and raw kernel state (FIFOs
#      included) unchanged; a full live migration between the two works afterwards
#   i  the C library: capi/examples/minivmm.c, statically linked against libmdevmig.a,
#      with -F opens the source mtty-2 itself (container, group, type1v2, device fd)
#      and hands the fd to mdevmig_dev_open_vfio_fd; the destination is vfio:<uuid>,
#      validation in the sandboxed /bin/mdevmig. exit 0; the destination's registers,
#      raw kernel state and FIFO bytes equal the source's. Then -T 300 flips one
#      envelope byte (inside chunk 0) on its way to a third mtty-2: exit 1, refused
#      with an auth.* code, that destination's registers and raw kernel state
#      unchanged and RUNNING, the source moved back to RUNNING with its state kept
#   j  mdevmig serve (QMP on a Unix socket) and serve/examples/qmp-vmm.c, a static C
#      VMM: it opens two real mtty-2s itself, passes their device fds with SCM_RIGHTS
#      and getfd, opens regions over them (device-open-fd, the destination's session
#      nonce binding the source's stream), and gets each stream's data fd back with
#      the device-set-state reply; it pipes the envelope from the source's data fd into
#      the destination's: exit 0, the kernel's arcs on both sides, no reset, the
#      destination's registers and raw kernel state = the source's, the source left
#      STOP with its own. -T 300 into a third mtty-2: refused auth.* at the
#      destination's STOP, source back to RUNNING, destination reset from ERROR
#      (mtty_reset), its registers and raw kernel state unchanged. save/restore
#      through a file (the stream verifies with the CLI; its raw state = the source
#      kernel's). A restore job fed through a passed pipe stalls mid-chunk, the
#      service is killed -9, its journal entry stays; the restarted service resets
#      the device ("recovered vfio:<uuid> left mid-restore"), state unchanged; the
#      whole stream through the job restores it; SIGTERM: exit 0, socket removed
. /guest-lib.sh

M=/bin/mdevmig
C=/bin/mttyctl
cd /tmp || exit 1

section() {
	echo
	echo "=== $*"
}
ok() { echo "ok: $*"; }
# show: print a command and run it, its output indented
show() {
	echo "\$ $*"
	"$@" >/tmp/show.out 2>&1
	_rc=$?
	sed 's/^/    /' /tmp/show.out
	return $_rc
}
# must WHAT cmd...: show the command; fail unless it exits 0
must() {
	_w=$1
	shift
	show "$@" || fail "$_w (status $_rc: $(tail -n1 /tmp/show.out))"
}
same_file() { # same_file WHAT A B
	cmp "$2" "$3" >/dev/null || {
		echo "--- $2"
		xxd "$2"
		echo "--- $3"
		xxd "$3"
		fail "$1: $2 and $3 differ"
	}
	ok "$1 ($(wc -c <"$2") bytes, sha256 $(sha256sum "$2" | cut -c1-16))"
}
same_text() { # same_text WHAT A B
	diff "$2" "$3" >/tmp/diff.out || {
		cat /tmp/diff.out
		fail "$1: $2 and $3 differ"
	}
	ok "$1"
}
# extract STREAM RAW: the raw mtty_data inside a stream, via the file backend
extract() {
	rm -f "$2"
	must "extract raw state of $1" $M restore --device "file:/tmp/$2,plugin=mtty,type=mtty-2" \
		--trust site.pub -i "$1"
}
json_field() { # json_field NAME FILE: a number field of a one-line JSON object
	sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2"
}
# The guest has no python: the one-line JSON objects are read with sed. NAME is
# unique in the object, and no string value contains '"', ',', '[' or ']'.
json_word() { # json_word NAME FILE: a scalar field, quotes dropped (null, true, 12, STOP)
	sed -n -E "s/.*\"$1\":(\"[^\"]*\"|[^,}]*).*/\1/p" "$2" | tr -d '"'
}
json_list() { # json_list NAME FILE: an array's elements, space-separated, quotes dropped
	sed -n -E "s/.*\"$1\":\[([^]]*)\].*/\1/p" "$2" | tr -d '"' | tr ',' ' '
}
json_first() { # json_first NAME FILE: the first object of an array of flat objects
	sed -n -E "s/.*\"$1\":\[\{([^}]*)\}.*/{\1}/p" "$2"
}
has_word() { # has_word WHAT LIST WORD: fail unless WORD is one of LIST's words
	case " $2 " in
	*" $3 "*) ;;
	*) fail "$1: '$3' not in [$2]" ;;
	esac
}
# live NAME ARGS...: mdevmig live ARGS --json; fail unless it exits 0; the JSON in
# NAME.json (stdout alone), stderr shown
live() {
	_n=$1
	shift
	echo "\$ $M live $* --json"
	$M live "$@" --json >"$_n.json" 2>"$_n.err"
	_rc=$?
	sed 's/^/    /' "$_n.json" "$_n.err"
	[ "$_rc" = 0 ] || fail "$_n: mdevmig live exited with status $_rc: $(tail -n1 "$_n.err")"
	[ "$(wc -l <"$_n.json")" = 1 ] || fail "$_n: stdout is not one JSON line"
}


section "setup"
must "mdevmig runs" $M --version
must "keygen" $M keygen --out /tmp/site
src=$(mdev_create "mtty-2") || fail "creating an mtty-2 mdev"
echo "source mtty-2: $src (group $(mdev_group "$src"))"

# ---------------------------------------------------------------------------- a
section "a. what the real device reports"
must "mttyctl info (source)" $C "$src" info
flags=$(sed -n 's/^migration_flags=\(0x[0-9a-f]*\).*/\1/p' /tmp/show.out)
[ "$flags" = 0x7 ] || fail "source migration flags are '$flags', expected 0x7"
grep -q '^state=RUNNING mig_data_size=96$' /tmp/show.out || fail "fresh mtty-2 is not RUNNING with 96 bytes of state"
ok "real migration flags $flags (STOP_COPY|P2P|PRE_COPY), type $(mdev_type "$src"), RUNNING, 96 bytes"
if $M describe --help >/dev/null 2>&1; then
	must "mdevmig describe" $M describe --device "vfio:$src"
	must "mdevmig describe --json" $M --json describe --device "vfio:$src"
	grep -q 'mtty-2' /tmp/show.out || fail "describe --json does not name the type mtty-2"
else
	echo "(this mdevmig has no 'describe' subcommand: using mttyctl info above and inspect below)"
fi

# ---------------------------------------------------------------------------- b
section "b. save a real mtty-2 with state, restore into a fresh mtty-2"
# port 0: FIFO on and cleared (FCR), IER RDI|RLSI, LCR 8N1, SCR; 12 bytes queued, 2 read
# port 1: MCR OUT2|RTS|DTR, LCR 7E2 (0x1e), SCR; 3 bytes queued (FCR never written)
must "set source registers" $C "$src" \
	w 0 fcr 0x07 w 0 ier 0x05 w 0 lcr 0x03 w 0 scr 0x5a tx 0 "mdevmig-mtty" r 0 rx r 0 rx \
	w 1 mcr 0x0b w 1 lcr 0x1e w 1 scr 0xa5 tx 1 "hi!"
if ! grep -q '^p0.rx=0x6d$' /tmp/show.out || ! grep -q '^p0.rx=0x64$' /tmp/show.out; then
	fail "reading RX did not return the looped-back 'm', 'd'"
fi
must "source registers" $C "$src" regs 0 regs 1
cp /tmp/show.out src.regs
grep -q 'p0: ier=0x05 iir=0xc4 lcr=0x03 mcr=0x00 lsr=0x01 msr=0xb3 scr=0x5a' src.regs ||
	fail "port 0 registers not as written: $(head -n1 src.regs)"
grep -q 'p1: ier=0x00 iir=0xc1 lcr=0x1e mcr=0x0b lsr=0x01 msr=0xb3 scr=0xa5' src.regs ||
	fail "port 1 registers not as written: $(tail -n1 src.regs)"
must "raw state straight from the source kernel" $C "$src" save /tmp/src.kraw expect-state RUNNING
xxd src.kraw
must "mdevmig save (source)" $M save --device "vfio:$src" --key site.key -o /tmp/s.mdm
must "source left in STOP" $C "$src" expect-state STOP
must "inspect" $M inspect s.mdm
grep -q 'device type: mtty-2' /tmp/show.out || fail "inspect does not show device type mtty-2"
must "verify" $M verify s.mdm --trust site.pub
extract s.mdm s.raw
same_file "raw state in the stream = raw state from the source kernel" s.raw src.kraw

dst=$(mdev_create "mtty-2") || fail "creating an mtty-2 mdev"
echo "destination mtty-2: $dst (group $(mdev_group "$dst"))"
must "fresh destination registers" $C "$dst" regs 0 regs 1
diff src.regs /tmp/show.out >/dev/null && fail "a fresh mtty-2 already has the source's registers?"
must "mdevmig restore --resume" $M restore --device "vfio:$dst" --trust site.pub -i s.mdm --resume
grep -q 'device left in RUNNING' /tmp/show.out || fail "restore did not leave the destination RUNNING"
must "destination registers" $C "$dst" expect-state RUNNING regs 0 regs 1
grep -v '^state=' /tmp/show.out >dst.regs
same_text "destination registers = source registers (IER IIR LCR MCR LSR MSR SCR, both ports)" src.regs dst.regs
must "raw state straight from the destination kernel" $C "$dst" save /tmp/dst.kraw
same_file "destination kernel state = source kernel state" dst.kraw src.kraw

# ---------------------------------------------------------------------------- d
section "d. save --precopy (the restored destination, RUNNING)"
must "the kernel's own PRE_COPY view (mttyctl presave)" $C "$dst" presave /tmp/dst.kpre
grep -q '^precopy_initial_bytes=24 ' /tmp/show.out || fail "kernel precopy info is not 24 initial bytes"
same_file "PRE_COPY+STOP_COPY raw = STOP_COPY raw (kernel)" dst.kpre src.kraw
must "mdevmig --json save --precopy" $M --json save --precopy --device "vfio:$dst" --key site.key -o /tmp/p.mdm
cp /tmp/show.out p.json
pre=$(json_field precopy_bytes p.json)
rawn=$(json_field raw_bytes p.json)
[ "$pre" = 24 ] || fail "precopy_bytes is '$pre', expected 24"
[ "$rawn" = 96 ] || fail "raw_bytes is '$rawn', expected 96"
ok "precopy_bytes=$pre raw_bytes=$rawn"
extract p.mdm p.raw
same_file "precopy save raw = plain save raw" p.raw s.raw

section "b (cont.). re-save the destination"
must "mdevmig save (destination, from STOP)" $M save --device "vfio:$dst" --key site.key -o /tmp/d.mdm
extract d.mdm d.raw
same_file "destination re-saved raw = source raw" d.raw s.raw
must "drain source FIFOs" $C "$src" drain 0 drain 1
grep -v '^state=' /tmp/show.out >src.rx
must "drain destination FIFOs" $C "$dst" drain 0 drain 1
cp /tmp/show.out dst.rx
grep -q '"evmig-mtty" (10 bytes) lsr_after=0x60' src.rx || fail "source port 0 FIFO: $(head -n1 src.rx)"
grep -q '"hi!" (3 bytes) lsr_after=0x60' src.rx || fail "source port 1 FIFO: $(tail -n1 src.rx)"
same_text "destination FIFOs drain the source's bytes" src.rx dst.rx

# ---------------------------------------------------------------------------- c
section "c. refusals before the kernel is touched"
# a valid mtty-1 stream, to prove an mtty-1 destination usable afterwards
one=$(mdev_create "mtty-1") || fail "creating an mtty-1 mdev"
must "mtty-1 source state" $C "$one" w 0 scr 0x11
must "save mtty-1" $M save --device "vfio:$one" --key site.key -o /tmp/one.mdm

# tampered: flip one byte in the middle of the (only) chunk's data
hl=$(od -An -tu4 -j12 -N4 s.mdm | tr -d ' ')
off=$((hl + 88 + 48))
b=$(od -An -tu1 -j"$off" -N1 s.mdm | tr -d ' ')
cp s.mdm tampered.mdm
# shellcheck disable=SC2059 # the format is the escaped byte
printf "$(printf '\\%03o' $((b ^ 0x55)))" | dd of=tampered.mdm bs=1 seek="$off" conv=notrunc 2>/dev/null
[ "$(cmp -l s.mdm tampered.mdm | wc -l)" = 1 ] || fail "tampering changed more or less than one byte"
echo "tampered.mdm: byte $off (chunk data byte 48 of 96, header_len $hl) flipped $b -> $((b ^ 0x55))"

# signed, but port 0's FIFO head is 200 (raw byte 24 + 24)
cp s.raw bad.raw
printf '\310' | dd of=bad.raw bs=1 seek=48 conv=notrunc 2>/dev/null
[ "$(od -An -tu1 -j48 -N1 bad.raw | tr -d ' ')" = 200 ] || fail "patching bad.raw"
must "sign the bad image (file backend)" $M save --device file:/tmp/bad.raw,plugin=mtty,type=mtty-2 \
	--key site.key -o /tmp/bad.mdm
must "the bad stream's signatures verify" $M verify bad.mdm --trust site.pub

# refused NAME STREAM TYPE CODE STATUS GOOD-STREAM GOOD-SCR
refused() {
	_n=$1 _s=$2 _t=$3 _code=$4 _st=$5 _good=$6 _scr=$7
	echo "--- $_n: $_s into a fresh $_t, expect error[$_code], status $_st"
	_d=$(mdev_create "$_t") || fail "creating an $_t mdev"
	must "$_n: destination state" $C "$_d" w 0 scr 0x3c tx 0 "dst" regs 0
	must "$_n: raw state before" $C "$_d" save "/tmp/$_n.before" expect-state RUNNING regs 0
	cp /tmp/show.out "$_n.regs.before"
	dmesg >"$_n.dmesg.before"
	echo "\$ $M restore --device vfio:$_d --trust site.pub -i $_s --resume"
	$M restore --device "vfio:$_d" --trust site.pub -i "$_s" --resume >"$_n.out" 2>"$_n.err"
	_rc=$?
	dmesg >"$_n.dmesg.after"
	sed 's/^/    /' "$_n.out" "$_n.err"
	[ "$_rc" = "$_st" ] || fail "$_n: exit status $_rc, expected $_st"
	grep -q "^error\[$_code\]" "$_n.err" || fail "$_n: stderr has no error[$_code]"
	ok "$_n refused: error[$_code], status $_rc"
	diff "$_n.dmesg.before" "$_n.dmesg.after" >"$_n.dmesg.diff"
	[ -s "$_n.dmesg.diff" ] && {
		cat "$_n.dmesg.diff"
		fail "$_n: the kernel logged something during the refused restore"
	}
	ok "$_n: no kernel log line during the restore (no mtty_reset: the device was never touched)"
	must "$_n: raw state after" $C "$_d" save "/tmp/$_n.after" expect-state RUNNING regs 0
	cp /tmp/show.out "$_n.regs.after"
	same_file "$_n: destination kernel state unchanged" "$_n.before" "$_n.after"
	same_text "$_n: destination registers unchanged, still RUNNING" "$_n.regs.before" "$_n.regs.after"
	must "$_n: destination still usable: a valid restore" $M restore --device "vfio:$_d" \
		--trust site.pub -i "$_good" --resume
	must "$_n: restored" $C "$_d" expect-state RUNNING r 0 scr
	grep -q "^p0.scr=$_scr\$" /tmp/show.out || fail "$_n: SCR after the valid restore is not $_scr"
	ok "$_n: valid restore afterwards worked (SCR $_scr, RUNNING)"
	check "remove $_d" mdev_remove "$_d"
}
refused tampered tampered.mdm mtty-2 auth.bad_chunk_signature 4 s.mdm 0x5a
refused wrongtype s.mdm mtty-1 compat.type_mismatch 3 one.mdm 0x11
refused fifoindex bad.mdm mtty-2 vendor.mtty.fifo_index 4 s.mdm 0x5a

# ---------------------------------------------------------------------------- end
section "f. destinations left mid-migration by a dead process"
# mtty keeps its migration state across close; reopening a device left in RESUMING
# and sending it to STOP oopses 6.12. mdevmig must reset such a device when it
# opens it, then restore normally.
for st in RESUMING STOP_COPY PRE_COPY; do
	d=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
	must "leave a destination in $st" $C "$d" w 0 scr 0x3c set "$st"
	dmesg >left.before
	must "restore into a device left in $st" $M restore --device "vfio:$d" --trust site.pub -i s.mdm --resume
	dmesg >left.after
	diff left.before left.after | grep -q 'mtty_reset: called' || fail "mdevmig did not reset a device left in $st"
	must "restored after the reset" $C "$d" expect-state RUNNING save /tmp/left.kraw
	same_file "device left in $st: reset, then restored" left.kraw src.kraw
	check "remove $d" mdev_remove "$d"
done

# ---------------------------------------------------------------------------- g
section "g. live: PRE_COPY rounds, then STOP_COPY, real mtty-2 -> real mtty-2"
lsrc=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
ldst=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
echo "live source $lsrc (group $(mdev_group "$lsrc")), destination $ldst (group $(mdev_group "$ldst"))"
# source port 0: FIFO on (FCR), IER RDI, LCR 8E1 (0x1b), SCR; 12 bytes queued, 1 read
# source port 1: MCR RTS|DTR, LCR 8N2 (0x07), SCR; 6 bytes queued
# destination: other SCRs, other bytes in port 1's FIFO (all replaced by the migration)
must "set live source registers" $C "$lsrc" \
	w 0 fcr 0x07 w 0 ier 0x01 w 0 lcr 0x1b w 0 scr 0xc3 tx 0 "live-precopy" r 0 rx \
	w 1 mcr 0x03 w 1 lcr 0x07 w 1 scr 0x3e tx 1 "p1-pre"
grep -q '^p0.rx=0x6c$' /tmp/show.out || fail "reading RX did not return the looped-back 'l'"
must "set live destination registers" $C "$ldst" w 0 scr 0x99 w 1 scr 0x66 tx 1 "stale"
must "live source registers" $C "$lsrc" regs 0 regs 1
cp /tmp/show.out lsrc.regs
grep -q 'p0: ier=0x01 .* lcr=0x1b .* scr=0xc3' lsrc.regs || fail "live source port 0: $(head -n1 lsrc.regs)"
grep -q 'p1: .* lcr=0x07 mcr=0x03 .* scr=0x3e' lsrc.regs || fail "live source port 1: $(tail -n1 lsrc.regs)"
must "live destination registers before" $C "$ldst" regs 0 regs 1
diff lsrc.regs /tmp/show.out >/dev/null && fail "the live destination already has the source's registers?"
must "raw state of the live source before" $C "$lsrc" save /tmp/lsrc.before expect-state RUNNING
dmesg >live.dmesg.before
live live --from "vfio:$lsrc" --to "vfio:$ldst"
dmesg >live.dmesg.after
[ "$(json_word aborted live.json)" = false ] || fail "live: aborted is '$(json_word aborted live.json)'"
fl=$(json_list flags live.json)
has_word "live: flags" "$fl" PRE_COPY
has_word "live: flags" "$fl" P2P
ok "live: exit 0, flags [$fl]"
rounds=$(json_list rounds live.json)
nr=$(echo $rounds | wc -w)
r1=${rounds%% *}
[ "$nr" -ge 1 ] || fail "live: no PRE_COPY round (rounds [$rounds])"
[ "$r1" -gt 0 ] || fail "live: round 1 moved '$r1' bytes"
sum=0
for x in $rounds; do sum=$((sum + x)); done
pre=$(json_word precopy_bytes live.json)
[ "$pre" = "$sum" ] || fail "live: precopy_bytes $pre, the rounds [$rounds] sum to $sum"
json_first precopy_info live.json >live.info1
di=$(json_word device_initial_bytes live.info1)
dd_=$(json_word device_dirty_bytes live.info1)
[ "$di" = 0 ] || fail "live: the kernel's initial_bytes after round 1 is '$di', expected 0 ($(cat live.info1))"
down=$(json_word downtime_bytes live.json)
[ "$down" -gt 0 ] 2>/dev/null || fail "live: downtime_bytes is '$down'"
ok "live: $nr round(s) [$rounds] = $pre bytes before the stop; round 1 precopy info $(cat live.info1) (kernel: initial 0 = mtty's end of data, dirty $dd_)"
ok "live: downtime $down bytes in $(json_word downtime_seconds live.json) s, stop_reason $(json_word stop_reason live.json), converged $(json_word converged live.json)"
sa=$(json_list source_arcs live.json)
for a in RUNNING-\>PRE_COPY PRE_COPY-\>PRE_COPY_P2P PRE_COPY_P2P-\>STOP_COPY STOP_COPY-\>STOP; do
	has_word "live: source arcs" "$sa" "$a"
done
da=$(json_list destination_arcs live.json)
for a in STOP-\>RESUMING RESUMING-\>STOP STOP-\>RUNNING_P2P RUNNING_P2P-\>RUNNING; do
	has_word "live: destination arcs" "$da" "$a"
done
ok "live: source arcs [$sa]"
ok "live: destination arcs [$da]"
diff live.dmesg.before live.dmesg.after >live.dmesg.diff
grep "mtty_reset" live.dmesg.diff && fail "live: a device was reset during a successful live migration"
ok "live: no device reset (no mtty_reset in the kernel log)"
must "live source left in STOP" $C "$lsrc" expect-state STOP regs 0 regs 1
grep -v '^state=' /tmp/show.out >lsrc.after
same_text "live source registers kept" lsrc.regs lsrc.after
must "live destination RUNNING" $C "$ldst" expect-state RUNNING regs 0 regs 1
grep -v '^state=' /tmp/show.out >ldst.regs
same_text "live destination registers = source registers (IER IIR LCR MCR LSR MSR SCR, both ports)" lsrc.regs ldst.regs
must "raw state of the live source after (from STOP)" $C "$lsrc" save /tmp/lsrc.after expect-state STOP
same_file "live source kernel state kept" lsrc.after lsrc.before
must "raw state of the live destination" $C "$ldst" save /tmp/ldst.kraw expect-state RUNNING
same_file "live destination kernel state = source kernel state" ldst.kraw lsrc.before
must "drain live source FIFOs" $C "$lsrc" drain 0 drain 1
cp /tmp/show.out lsrc.rx
grep -q '"ive-precopy" (11 bytes) lsr_after=0x60' lsrc.rx || fail "live source port 0 FIFO: $(head -n1 lsrc.rx)"
grep -q '"p1-pre" (6 bytes) lsr_after=0x60' lsrc.rx || fail "live source port 1 FIFO: $(tail -n1 lsrc.rx)"
must "drain live destination FIFOs" $C "$ldst" drain 0 drain 1
same_text "live destination FIFOs drain the source's bytes" lsrc.rx /tmp/show.out
ok "live: $nr round(s) [$rounds], downtime $down bytes; source STOP, destination RUNNING with the source's state"

# ---------------------------------------------------------------------------- h
section "h. live abandoned after PRE_COPY round 1"
asrc=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
adst=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
echo "abort source $asrc (group $(mdev_group "$asrc")), destination $adst (group $(mdev_group "$adst"))"
must "set abort source registers" $C "$asrc" w 0 lcr 0x03 w 0 scr 0x21 w 1 scr 0x42 tx 0 "keep-me"
must "set abort destination registers" $C "$adst" w 0 lcr 0x1f w 0 scr 0x84 w 1 scr 0x18 tx 1 "mine"
must "abort source before" $C "$asrc" save /tmp/asrc.before expect-state RUNNING regs 0 regs 1
cp /tmp/show.out asrc.regs
grep -q 'p0: .* lcr=0x03 .* scr=0x21' asrc.regs || fail "abort source port 0: $(grep '^p0' asrc.regs)"
must "abort destination before" $C "$adst" save /tmp/adst.before expect-state RUNNING regs 0 regs 1
cp /tmp/show.out adst.regs
grep -q 'p0: .* lcr=0x1f .* scr=0x84' adst.regs || fail "abort destination port 0: $(grep '^p0' adst.regs)"
cmp -s asrc.before adst.before && fail "abort source and destination have the same raw state"
dmesg >abort.dmesg.before
live abort --from "vfio:$asrc" --to "vfio:$adst" --abort-after-round 1
dmesg >abort.dmesg.after
[ "$(json_word aborted abort.json)" = true ] || fail "abort: aborted is '$(json_word aborted abort.json)'"
arounds=$(json_list rounds abort.json)
[ "$(echo $arounds | wc -w)" = 1 ] || fail "abort: rounds [$arounds], expected exactly 1"
[ "$(json_word source_state abort.json)" = RUNNING ] || fail "abort: source_state $(json_word source_state abort.json)"
[ "$(json_word destination_state abort.json)" = RUNNING ] ||
	fail "abort: destination_state $(json_word destination_state abort.json)"
refd=$(json_word destination_refused abort.json)
echo "$refd" | grep -Eq '^[a-z_]+(\.[a-z0-9_]+)+$' ||
	fail "abort: destination_refused is '$refd', not an error code (the destination accepted a partial stream?)"
asa=$(json_list source_arcs abort.json)
case "$asa" in
*" PRE_COPY->RUNNING") ;;
*) fail "abort: source arcs [$asa] do not end with PRE_COPY->RUNNING" ;;
esac
has_word "abort: source arcs" "$asa" RUNNING-\>PRE_COPY
ok "abort: exit 0, aborted after round 1 ([$arounds] bytes); destination refused the partial stream: $refd"
ok "abort: source arcs [$asa], destination arcs [$(json_list destination_arcs abort.json)]"
diff abort.dmesg.before abort.dmesg.after >abort.dmesg.diff
grep -q 'mtty_reset: called' abort.dmesg.diff || {
	cat abort.dmesg.diff
	fail "abort: the destination was not reset (no mtty_reset in the kernel log)"
}
ok "abort: destination reset ($(grep -c 'mtty_reset: called' abort.dmesg.diff) mtty_reset line(s) in the kernel log)"
must "abort source after" $C "$asrc" save /tmp/asrc.after expect-state RUNNING regs 0 regs 1
cp /tmp/show.out asrc.regs.after
same_text "abort: source RUNNING, registers unchanged" asrc.regs asrc.regs.after
same_file "abort: source kernel state (FIFOs included) unchanged" asrc.after asrc.before
must "abort destination after" $C "$adst" save /tmp/adst.after expect-state RUNNING regs 0 regs 1
cp /tmp/show.out adst.regs.after
same_text "abort: destination RUNNING, registers unchanged" adst.regs adst.regs.after
same_file "abort: destination kernel state (FIFOs included) unchanged" adst.after adst.before
live again --from "vfio:$asrc" --to "vfio:$adst"
must "after the abort: a full live migration" $C "$adst" expect-state RUNNING save /tmp/again.kraw
same_file "after the abort: the destination now holds the source's state" again.kraw asrc.before
must "after the abort: source stopped" $C "$asrc" expect-state STOP
ok "abort: both devices usable afterwards ($(json_list rounds again.json | wc -w) round(s), downtime $(json_word downtime_bytes again.json) bytes)"

# ---------------------------------------------------------------------------- i
section "i. the C library: minivmm (libmdevmig.a) migrates a real mtty-2 from a VMM-owned fd"
V=/bin/minivmm
# minivmm RUN ARGS...: run minivmm, output in RUN.out/RUN.err (shown); status in _rc
minivmm() {
	_n=$1
	shift
	echo "\$ $V $*"
	$V "$@" >"$_n.out" 2>"$_n.err"
	_rc=$?
	sed 's/^/    /' "$_n.out" "$_n.err"
}
must "keygen for minivmm" $M keygen --out /tmp/k
csrc=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
cdst=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
echo "C source $csrc (group $(mdev_group "$csrc")), destination $cdst (group $(mdev_group "$cdst"))"
# source port 0: FIFO on, IER RDI|RLSI, LCR 8E1, SCR; 9 bytes queued, 1 read
# source port 1: MCR OUT2|RTS|DTR, LCR 8N2, SCR; 10 bytes queued
must "set C source registers" $C "$csrc" \
	w 0 fcr 0x07 w 0 ier 0x05 w 0 lcr 0x1b w 0 scr 0x77 tx 0 "c-library" r 0 rx \
	w 1 mcr 0x0b w 1 lcr 0x07 w 1 scr 0x88 tx 1 "libmdevmig"
grep -q '^p0.rx=0x63$' /tmp/show.out || fail "reading RX did not return the looped-back 'c'"
must "set C destination registers" $C "$cdst" w 0 scr 0x12 w 1 scr 0x34 tx 1 "old"
must "C source before" $C "$csrc" save /tmp/csrc.before expect-state RUNNING regs 0 regs 1
grep '^p[01]:' /tmp/show.out >csrc.regs
grep -q 'p0: ier=0x05 .* lcr=0x1b .* scr=0x77' csrc.regs || fail "C source port 0: $(head -n1 csrc.regs)"
grep -q 'p1: .* lcr=0x07 mcr=0x0b .* scr=0x88' csrc.regs || fail "C source port 1: $(tail -n1 csrc.regs)"
must "C destination before" $C "$cdst" save /tmp/cdst.before regs 0 regs 1
grep '^p[01]:' /tmp/show.out >cdst.regs.before
diff csrc.regs cdst.regs.before >/dev/null && fail "the C destination already has the source's registers?"
cmp -s csrc.before cdst.before && fail "the C source and destination have the same raw state"
minivmm c -F "vfio:$csrc" "vfio:$cdst" /tmp/k.key /tmp/k.pub $M
[ "$_rc" = 0 ] || fail "minivmm -F exited with status $_rc: $(tail -n1 c.err)"
grep -q "^vfio fd mode: $csrc: .* device fd [0-9]" c.out || fail "minivmm did not open the source's VFIO device itself"
grep -q '^source flags: STOP_COPY P2P PRE_COPY$' c.out || fail "minivmm: source flags: $(grep '^source flags' c.out)"
grep -Eq '^(MATCH|digests: n/a)$' c.out || fail "minivmm printed neither MATCH nor 'digests: n/a'"
grep -q '^destination refused' c.out && fail "minivmm: the destination refused the stream"
ok "minivmm -F: exit 0, $(grep '^rounds:' c.out), $(grep '^downtime:' c.out | cut -d, -f1), $(grep -E '^(MATCH|digests: n/a)$' c.out)"
must "C source after (left STOP)" $C "$csrc" expect-state STOP save /tmp/csrc.after regs 0 regs 1
grep '^p[01]:' /tmp/show.out >csrc.regs.after
same_text "C source registers kept" csrc.regs csrc.regs.after
same_file "C source kernel state kept" csrc.after csrc.before
must "C destination after (RUNNING)" $C "$cdst" expect-state RUNNING save /tmp/cdst.after regs 0 regs 1
grep '^p[01]:' /tmp/show.out >cdst.regs
same_text "C destination registers = source registers (IER IIR LCR MCR LSR MSR SCR, both ports)" csrc.regs cdst.regs
same_file "C destination kernel state = source kernel state" cdst.after csrc.before
must "drain C destination FIFOs" $C "$cdst" drain 0 drain 1
grep -q '"-library" (8 bytes) lsr_after=0x60' /tmp/show.out || fail "C destination port 0 FIFO: $(head -n1 /tmp/show.out)"
grep -q '"libmdevmig" (10 bytes) lsr_after=0x60' /tmp/show.out || fail "C destination port 1 FIFO: $(tail -n1 /tmp/show.out)"
ok "C destination FIFOs drain the source's bytes"

echo "--- tampered: minivmm -F -T 300 from the C source into a third mtty-2"
must "C source RUNNING again" $C "$csrc" set RUNNING expect-state RUNNING
tdst=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
echo "tamper destination $tdst (group $(mdev_group "$tdst"))"
must "set tamper destination registers" $C "$tdst" w 0 lcr 0x03 w 0 scr 0xe1 w 1 scr 0x1e tx 0 "untouched"
must "tamper destination before" $C "$tdst" save /tmp/tdst.before expect-state RUNNING regs 0 regs 1
grep '^p[01]:' /tmp/show.out >tdst.regs.before
cmp -s tdst.before csrc.before && fail "the tamper destination has the source's raw state"
dmesg >tamper.dmesg.before
minivmm tamper -F -T 300 "vfio:$csrc" "vfio:$tdst" /tmp/k.key /tmp/k.pub $M
dmesg >tamper.dmesg.after
[ "$_rc" = 1 ] || fail "minivmm -T 300 exited with status $_rc, expected 1"
grep -q '^tampered: envelope byte 300 flipped' tamper.out || fail "minivmm -T 300 flipped nothing"
tcode=$(sed -n 's/^destination refused the stream: \([^:]*\):.*/\1/p' tamper.out)
case "$tcode" in
auth.*) ;;
*) fail "minivmm -T 300: refusal code is '$tcode', expected auth.*" ;;
esac
grep -q '^source back to RUNNING$' tamper.out || fail "minivmm did not move the source back to RUNNING"
grep -Eq '^destination (after the failure|reset): RUNNING$' tamper.out ||
	fail "minivmm did not bring the destination back to RUNNING"
ok "tampered stream refused: $tcode, exit 1; source moved back to RUNNING; $(grep '^destination after the failure' tamper.out)$(grep '^destination reset' tamper.out | sed 's/^/, /')"
ok "tamper: $(diff tamper.dmesg.before tamper.dmesg.after | grep -c 'mtty_reset: called') mtty_reset line(s) in the kernel log during the refused run"
must "tamper destination after" $C "$tdst" save /tmp/tdst.after expect-state RUNNING regs 0 regs 1
grep '^p[01]:' /tmp/show.out >tdst.regs.after
same_text "tamper: destination registers unchanged, RUNNING" tdst.regs.before tdst.regs.after
same_file "tamper: destination kernel state unchanged" tdst.before tdst.after
must "tamper: source RUNNING" $C "$csrc" expect-state RUNNING save /tmp/csrc.tamper regs 0 regs 1
grep '^p[01]:' /tmp/show.out >csrc.regs.tamper
same_text "tamper: source registers kept" csrc.regs csrc.regs.tamper
same_file "tamper: source kernel state kept" csrc.tamper csrc.before
ok "C library: real mtty-2 migrated from a VMM-owned fd; a tampered stream refused ($tcode) with the destination untouched"

section "control: a device that IS touched shows in the kernel log"
# The refusals above rely on "no kernel log line": mtty logs every reset, and mdevmig
# resets a destination whenever a restore fails after touching it.
dmesg >control.before
must "VFIO_DEVICE_RESET through mttyctl" $C "$one" reset expect-state RUNNING
dmesg >control.after
diff control.before control.after | grep -q 'mtty_reset: called' ||
	fail "a VFIO_DEVICE_RESET left no 'mtty_reset: called' in the kernel log"
ok "VFIO_DEVICE_RESET logged: $(diff control.before control.after | grep 'mtty_reset' | tail -n1)"

# ---------------------------------------------------------------------------- j
section "j. mdevmig serve: a VMM passes its VFIO fd over QMP and gets the envelope data fd back"
Q=/bin/qmp-vmm
S=/tmp/s.sock
SD=/tmp/serve-state
# mtty has 24 ports; the devices of g, h and i are done with
for u in $lsrc $ldst $asrc $adst $csrc $cdst $tdst; do
	check "remove $u" mdev_remove "$u"
done
# qvmm RUN ARGS...: run qmp-vmm, output in RUN.out/RUN.err (shown); status in _rc
qvmm() {
	_n=$1
	shift
	echo "\$ $Q $*"
	$Q "$@" >"$_n.out" 2>"$_n.err"
	_rc=$?
	sed 's/^/    /' "$_n.out" "$_n.err"
}
# serve_start LOG: mdevmig serve in the background (pid in $spid), up once it listens
serve_start() {
	echo "\$ $M serve --socket $S --state-dir $SD --key /tmp/svc.key --trust /tmp/svc.pub 2>$1 &"
	$M serve --socket "$S" --state-dir "$SD" --key /tmp/svc.key --trust /tmp/svc.pub >"$1" 2>&1 &
	spid=$!
	_i=0
	until grep -q "listening on $S" "$1"; do
		kill -0 "$spid" 2>/dev/null || {
			cat "$1"
			fail "mdevmig serve exited at start: $(tail -n1 "$1")"
		}
		[ $_i -lt 100 ] || fail "mdevmig serve did not listen within 10 s"
		sleep 0.1
		_i=$((_i + 1))
	done
	[ -S "$S" ] || fail "mdevmig serve says it listens, but $S is not a socket"
	ok "mdevmig serve (pid $spid) listening on $S"
}
# arcs_have WHAT FILE ID ARC...: fail unless the device-query line of region ID lists each ARC
arcs_have() {
	_w=$1 _f=$2 _id=$3
	shift 3
	_l=$(grep "^$_id: query: " "$_f" | tail -n1)
	for _a in "$@"; do
		case "$_l" in
		*"$_a"*) ;;
		*) fail "$_w: region $_id's arcs lack $_a ($_l)" ;;
		esac
	done
}
must "keygen for the service" $M keygen --out /tmp/svc
rm -rf "$SD"
serve_start serve1.log

jsrc=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
jdst=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
echo "QMP source $jsrc (group $(mdev_group "$jsrc")), destination $jdst (group $(mdev_group "$jdst"))"
# source port 0: FIFO on, IER RDI, LCR 7O1 (0x0a), SCR; 8 bytes queued, 1 read
# source port 1: MCR OUT2|DTR, LCR 8N1, SCR; 4 bytes queued
must "set QMP source registers" $C "$jsrc" \
	w 0 fcr 0x07 w 0 ier 0x01 w 0 lcr 0x0a w 0 scr 0x6b tx 0 "qmp-vmm!" r 0 rx \
	w 1 mcr 0x09 w 1 lcr 0x03 w 1 scr 0xb6 tx 1 "scm!"
grep -q '^p0.rx=0x71$' /tmp/show.out || fail "reading RX did not return the looped-back 'q'"
must "set QMP destination registers" $C "$jdst" w 0 scr 0x2d w 1 scr 0xd2 tx 0 "stale"
must "QMP source before" $C "$jsrc" save /tmp/jsrc.before expect-state RUNNING regs 0 regs 1
grep '^p[01]:' /tmp/show.out >jsrc.regs
grep -q 'p0: ier=0x01 .* lcr=0x0a .* scr=0x6b' jsrc.regs || fail "QMP source port 0: $(head -n1 jsrc.regs)"
grep -q 'p1: .* lcr=0x03 mcr=0x09 .* scr=0xb6' jsrc.regs || fail "QMP source port 1: $(tail -n1 jsrc.regs)"
must "QMP destination before" $C "$jdst" save /tmp/jdst.before expect-state RUNNING regs 0 regs 1
grep '^p[01]:' /tmp/show.out >jdst.regs.before
diff jsrc.regs jdst.regs.before >/dev/null && fail "the QMP destination already has the source's registers?"
cmp -s jsrc.before jdst.before && fail "the QMP source and destination have the same raw state"

echo "--- migrate: two regions over passed device fds, the envelope piped between their data fds"
dmesg >jm.dmesg.before
qvmm jm -s "$S" migrate "$jsrc" "$jdst"
dmesg >jm.dmesg.after
[ "$_rc" = 0 ] || fail "qmp-vmm migrate exited with status $_rc: $(tail -n1 jm.err)"
[ "$(grep -c '^vfio: .* device fd [0-9]' jm.out)" = 2 ] || fail "qmp-vmm did not open both devices itself"
for id in src dst; do
	grep -q "^$id: region open over the passed fd of " jm.out || fail "region $id was not opened over a passed fd"
done
grep -q '^dst: -> resuming: now resuming, data fd [0-9]' jm.out || fail "no data fd came with the destination's RESUMING"
grep -q '^src: -> stop-copy: now stop-copy, data fd [0-9]' jm.out || fail "no data fd came with the source's STOP_COPY"
grep -q '^dst: -> stop: now stop$' jm.out || fail "the destination's STOP (the restore's verdict) did not succeed"
# the kernel's paths for a P2P device (vfio_mig_get_next_state): RUNNING -> RUNNING_P2P -> STOP
arcs_have "migrate" jm.out src \
	'[["running","running-p2p"],["running-p2p","stop"],["stop","stop-copy"],["stop-copy","stop"]]'
arcs_have "migrate" jm.out dst '[["running","running-p2p"],["running-p2p","stop"],["stop","resuming"],' \
	'["resuming","stop"],["stop","running-p2p"],["running-p2p","running"]]'
jbytes=$(sed -n 's/^piped \([0-9]*\) envelope bytes .*/\1/p' jm.out)
grep -q "region \"src\" open on vfio-fd:/sys/bus/mdev/devices/$jsrc" serve1.log ||
	fail "the service log does not show the source region over the passed fd"
grep -q "region \"dst\" open on vfio-fd:/sys/bus/mdev/devices/$jdst" serve1.log ||
	fail "the service log does not show the destination region over the passed fd"
ok "qmp-vmm migrate: exit 0; $jbytes envelope bytes from the source's data fd into the destination's; the arcs: $(grep '^src: query' jm.out | sed 's/.*arcs //') / $(grep '^dst: query' jm.out | sed 's/.*arcs //')"
diff jm.dmesg.before jm.dmesg.after >jm.dmesg.diff
grep "mtty_reset" jm.dmesg.diff && fail "migrate: a device was reset during a successful migration"
ok "migrate: no device reset (no mtty_reset in the kernel log)"
must "QMP source after (left STOP)" $C "$jsrc" expect-state STOP save /tmp/jsrc.after regs 0 regs 1
grep '^p[01]:' /tmp/show.out >jsrc.regs.after
same_text "QMP source registers kept" jsrc.regs jsrc.regs.after
same_file "QMP source kernel state kept" jsrc.after jsrc.before
must "QMP destination after (RUNNING)" $C "$jdst" expect-state RUNNING save /tmp/jdst.after regs 0 regs 1
grep '^p[01]:' /tmp/show.out >jdst.regs
same_text "QMP destination registers = source registers (IER IIR LCR MCR LSR MSR SCR, both ports)" jsrc.regs jdst.regs
same_file "QMP destination kernel state = source kernel state" jdst.after jsrc.before

echo "--- tampered: qmp-vmm -T 300 migrate from the QMP source into a third mtty-2"
must "QMP source RUNNING again" $C "$jsrc" set RUNNING expect-state RUNNING
jtam=$(mdev_create mtty-2) || fail "creating an mtty-2 mdev"
echo "tamper destination $jtam (group $(mdev_group "$jtam"))"
must "set tamper destination registers" $C "$jtam" w 0 lcr 0x1b w 0 scr 0x5e w 1 scr 0xe5 tx 1 "keep"
must "tamper destination before" $C "$jtam" save /tmp/jtam.before expect-state RUNNING regs 0 regs 1
grep '^p[01]:' /tmp/show.out >jtam.regs.before
cmp -s jtam.before jsrc.before && fail "the tamper destination has the source's raw state"
dmesg >jt.dmesg.before
qvmm jt -s "$S" -T 300 migrate "$jsrc" "$jtam"
dmesg >jt.dmesg.after
[ "$_rc" = 1 ] || fail "qmp-vmm -T 300 migrate exited with status $_rc, expected 1"
grep -q '^tampered: envelope byte 300 flipped' jt.out || fail "qmp-vmm -T 300 flipped nothing"
jcode=$(sed -n 's/^destination refused the stream: \([^:]*\):.*/\1/p' jt.out)
case "$jcode" in
auth.*) ;;
*) fail "qmp-vmm -T 300: refusal code is '$jcode', expected auth.*" ;;
esac
grep -q '^source back to RUNNING$' jt.out || fail "qmp-vmm did not move the source back to RUNNING"
grep -Eq '^destination (after the refusal|reset): running$' jt.out ||
	fail "the destination region did not come back to RUNNING"
ok "tampered stream refused by the service at the destination's STOP: $jcode, exit 1 ($(grep -E '^(piped|dst: the service stopped reading)' jt.out | head -n1 | sed 's/^dst: //'))"
ok "tamper: source moved back to RUNNING; $(grep '^destination after the refusal' jt.out)$(grep '^destination reset' jt.out | sed 's/^/, /')"
nreset=$(diff jt.dmesg.before jt.dmesg.after | grep -c 'mtty_reset: called')
[ "$nreset" -ge 1 ] || fail "tamper: the destination the service moved to RESUMING was not reset (no mtty_reset)"
ok "tamper: $nreset mtty_reset line(s) in the kernel log during the refused run (the destination region, left in ERROR by the refused STOP, reset with device-reset)"
must "tamper destination after" $C "$jtam" save /tmp/jtam.after expect-state RUNNING regs 0 regs 1
grep '^p[01]:' /tmp/show.out >jtam.regs.after
same_text "tamper: destination registers unchanged, RUNNING" jtam.regs.before jtam.regs.after
same_file "tamper: destination kernel state unchanged (no byte of the stream reached the kernel)" jtam.before jtam.after
must "tamper: source RUNNING" $C "$jsrc" expect-state RUNNING save /tmp/jsrc.tamper regs 0 regs 1
grep '^p[01]:' /tmp/show.out >jsrc.regs.tamper
same_text "tamper: source registers kept" jsrc.regs jsrc.regs.tamper
same_file "tamper: source kernel state kept" jsrc.tamper jsrc.before

echo "--- save and restore as two VMMs: the envelope through a file"
qvmm js -s "$S" save "$jsrc" /tmp/j.mdm
[ "$_rc" = 0 ] || fail "qmp-vmm save exited with status $_rc: $(tail -n1 js.err)"
arcs_have "save" js.out src '["stop","stop-copy"],["stop-copy","stop"],["stop","running-p2p"],["running-p2p","running"]]'
must "the service-signed stream verifies with the CLI" $M verify j.mdm --trust svc.pub
rm -f j.raw
must "extract raw state of j.mdm" $M restore --device "file:/tmp/j.raw,plugin=mtty,type=mtty-2" \
	--trust svc.pub -i j.mdm
same_file "raw state in the service's stream = raw state from the source kernel" j.raw jsrc.before
must "QMP source RUNNING after the save" $C "$jsrc" expect-state RUNNING
qvmm jr -s "$S" restore "$jtam" /tmp/j.mdm
[ "$_rc" = 0 ] || fail "qmp-vmm restore exited with status $_rc: $(tail -n1 jr.err)"
arcs_have "restore" jr.out dst '["stop","resuming"],["resuming","stop"],["stop","running-p2p"],["running-p2p","running"]]'
must "restored over QMP" $C "$jtam" expect-state RUNNING save /tmp/jtam.restored
same_file "the tamper destination, restored over QMP afterwards, holds the source's state" jtam.restored jsrc.before

echo "--- journal: a restore job stalled mid-stream, the service killed -9, then restarted"
must "stall target before" $C "$jdst" w 0 scr 0x4f save /tmp/jk.before expect-state RUNNING regs 0
grep '^p0:' /tmp/show.out >jk.regs.before
hl=$(od -An -tu4 -j12 -N4 j.mdm | tr -d ' ')
k=$((hl + 88 + 10))
echo "\$ $Q -s $S -k $k job-restore $jdst /tmp/j.mdm &"
$Q -s "$S" -k "$k" job-restore "$jdst" /tmp/j.mdm >jk.out 2>jk.err &
qpid=$!
_i=0
until grep -q '^stalled after' jk.out; do
	kill -0 "$qpid" 2>/dev/null || {
		cat jk.out jk.err
		fail "qmp-vmm job-restore exited before stalling"
	}
	[ $_i -lt 100 ] || fail "qmp-vmm job-restore did not stall within 10 s"
	sleep 0.1
	_i=$((_i + 1))
done
sleep 1
jj=$(ls "$SD/journal")
grep -q "\"device\":\"vfio:$jdst\"" "$SD/journal/$jj" || fail "no journal entry for vfio:$jdst: [$jj] $(cat "$SD/journal/"* 2>/dev/null)"
ok "restore job stalled after $k bytes (header $hl bytes + part of chunk 0); journal $jj: $(cat "$SD/journal/$jj")"
dmesg >jk.dmesg.before
kill -9 "$spid"
wait "$spid"
krc=$?
[ "$krc" = 137 ] || fail "the killed service exited with status $krc, expected 137"
wait "$qpid"
qrc=$?
sed 's/^/    /' jk.out jk.err
[ "$qrc" = 0 ] || fail "qmp-vmm job-restore exited with status $qrc after the service died"
grep -q '^the service went away' jk.out || fail "qmp-vmm did not see the service go away"
[ -f "$SD/journal/$jj" ] || fail "the killed service left no journal entry"
ok "service killed -9 mid-restore (status 137); journal entry $jj left behind"
serve_start serve2.log
dmesg >jk.dmesg.after
sed 's/^/    /' serve2.log
grep -q "recovered vfio:$jdst left mid-restore by a previous run: reset (now RUNNING)" serve2.log ||
	fail "the restarted service did not recover vfio:$jdst: $(grep -v listening serve2.log | head -n1)"
[ -z "$(ls "$SD/journal")" ] || fail "journal entries left after the recovery: $(ls "$SD/journal")"
diff jk.dmesg.before jk.dmesg.after | grep -q 'mtty_reset: called' ||
	fail "the recovery did not reset the device (no mtty_reset in the kernel log)"
ok "restart: $(grep 'recovered' serve2.log | sed 's/^mdevmig-serve: //'); mtty_reset in the kernel log; journal empty"
must "stalled device after the recovery" $C "$jdst" save /tmp/jk.after expect-state RUNNING regs 0
grep '^p0:' /tmp/show.out >jk.regs.after
same_text "recovered device: registers unchanged, RUNNING" jk.regs.before jk.regs.after
same_file "recovered device: kernel state unchanged" jk.before jk.after
qvmm jf -s "$S" job-restore "$jdst" /tmp/j.mdm
[ "$_rc" = 0 ] || fail "qmp-vmm job-restore (whole stream) exited with status $_rc: $(tail -n1 jf.err)"
grep -q '^job vmm-restore: finished ok$' jf.out || fail "the restore job did not finish ok"
must "restored by the job" $C "$jdst" expect-state RUNNING save /tmp/jf.kraw
same_file "restore job over a passed pipe: the device holds the source's state" jf.kraw jsrc.before

echo "--- SIGTERM"
kill -TERM "$spid"
wait "$spid"
trc=$?
sed 's/^/    /' serve2.log | tail -n 3
[ "$trc" = 0 ] || fail "mdevmig serve exited with status $trc after SIGTERM, expected 0"
grep -q 'mdevmig-serve: stopped' serve2.log || fail "the service did not log 'stopped'"
[ -e "$S" ] && fail "the service left its socket $S behind"
ok "SIGTERM: mdevmig serve drained and exited 0, socket removed"
ok "mdevmig serve: a real mtty-2 migrated over passed VFIO fds and data fds; a tampered stream refused ($jcode) with the destination untouched; a killed service's restore recovered at restart"

section "cleanup"
for u in $(mdev_list); do
	check "remove $u" mdev_remove "$u"
done
[ -z "$(mdev_list)" ] || fail "mdevs left: $(mdev_list)"
echo "mtty-guest: all checks passed"
