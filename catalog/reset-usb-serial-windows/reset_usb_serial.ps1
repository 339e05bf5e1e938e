# posassist catalog: restart a wedged USB-serial adapter with pnputil (Windows 10 2004 and later).
# The device instance id arrives only as $env:POSASSIST_PARAM_INSTANCE_ID (the manifest's pattern
# checked it; it is checked again here). Native tools are called with the call operator on an
# absolute path and separate arguments: no command is ever built from a string.
$ErrorActionPreference = 'Stop'
$id = $env:POSASSIST_PARAM_INSTANCE_ID
if ($id -notmatch '^(USB|FTDIBUS)\\VID_[0-9A-Fa-f]{4}&PID_[0-9A-Fa-f]{4}[A-Za-z0-9&_.+\\]{0,120}$') {
    [Console]::Error.WriteLine('bad device instance id')
    exit 5
}
if ([Environment]::OSVersion.Version.Build -lt 19041) {
    [Console]::Error.WriteLine('pnputil /restart-device needs Windows 10 2004 or later: replug the adapter by hand')
    exit 3
}
$pnputil = Join-Path $env:SystemRoot 'System32\pnputil.exe'
& $pnputil '/enum-devices' '/instanceid' $id
if ($LASTEXITCODE -ne 0) {
    [Console]::Error.WriteLine('no such device')
    exit 3
}
& $pnputil '/restart-device' $id
$code = $LASTEXITCODE
& $pnputil '/enum-devices' '/instanceid' $id
if ($code -ne 0) { exit 1 }
exit 0
