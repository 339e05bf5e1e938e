# posassist catalog: bring a Windows printer back online (reference/pos-devices.md section 5.1 #3).
# A printer set to "Use Printer Offline" or paused queues jobs and prints nothing. This clears
# WorkOffline and resumes the printer through WMI (Win32_Printer), then reads it back.
# The printer is found by comparing names, never by a query string built from the parameter.
# PowerShell 2.0 compatible (Windows 7 tills). Exit: 0 online; 1 still offline; 3 no such printer.
$ErrorActionPreference = 'Stop'
$name = $env:POSASSIST_PARAM_PRINTER
$printer = @(Get-WmiObject -Class Win32_Printer | Where-Object { $_.Name -eq $name })
if ($printer.Count -ne 1) {
    [Console]::Error.WriteLine('no printer named ' + $name)
    exit 3
}
$p = $printer[0]
Write-Output ('before: WorkOffline=' + $p.WorkOffline + ' PrinterStatus=' + $p.PrinterStatus + ' jobs=' + $p.JobCountSinceLastReset)
if ($p.WorkOffline) {
    $p.WorkOffline = $false
    [void]$p.Put()
    Write-Output 'WorkOffline cleared'
}
$result = $p.Resume()
Write-Output ('Resume returned ' + $result.ReturnValue)
$after = @(Get-WmiObject -Class Win32_Printer | Where-Object { $_.Name -eq $name })[0]
Write-Output ('after: WorkOffline=' + $after.WorkOffline + ' PrinterStatus=' + $after.PrinterStatus)
if ($after.WorkOffline) { exit 1 }
exit 0
