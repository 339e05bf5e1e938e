# posassist catalog: clear a stuck Windows print queue (reference/pos-devices.md section 5.1 #1).
# Stops the Spooler service, MOVES (never deletes) the .SPL/.SHD job files from the spool folder
# to a dated quarantine folder under ProgramData\posassist, and starts the Spooler again.
# PowerShell 2.0 compatible (Windows 7 tills). No parameters; cmdlets only, no command strings.
$ErrorActionPreference = 'Stop'
$key = 'HKLM:\SYSTEM\CurrentControlSet\Control\Print\Printers'
$spool = (Get-ItemProperty -LiteralPath $key -Name DefaultSpoolDirectory -ErrorAction SilentlyContinue).DefaultSpoolDirectory
if (-not $spool) { $spool = Join-Path $env:SystemRoot 'System32\spool\PRINTERS' }
$stamp = Get-Date -Format 'yyyyMMdd-HHmmss'
$quarantine = Join-Path $env:SystemDrive ('ProgramData\posassist\spool-quarantine\' + $stamp)
Write-Output ('spooler before: ' + (Get-Service -Name Spooler).Status)
Write-Output ('spool folder: ' + $spool)
Stop-Service -Name Spooler -Force
$moved = 0
try {
    $jobs = @(Get-ChildItem -LiteralPath $spool | Where-Object {
        -not $_.PSIsContainer -and ($_.Extension -eq '.SPL' -or $_.Extension -eq '.SHD')
    })
    if ($jobs.Count -gt 0) {
        New-Item -ItemType Directory -Path $quarantine -Force | Out-Null
        foreach ($job in $jobs) {
            Move-Item -LiteralPath $job.FullName -Destination $quarantine
            Write-Output ('moved ' + $job.Name)
            $moved++
        }
    }
}
finally {
    Start-Service -Name Spooler
}
Write-Output ('moved ' + $moved + ' spool files to ' + $quarantine)
$status = (Get-Service -Name Spooler).Status
Write-Output ('spooler after: ' + $status)
if ($status -ne 'Running') { exit 1 }
exit 0
