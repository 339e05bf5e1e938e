@echo off
rem posassist agent: offline install or upgrade (Windows 7 SP1 to 11). Run as administrator.
rem Options go to installer.py: --data DIR --install-dir DIR --desktop-user NAME
rem Python 3.8+: set POSASSIST_PYTHON=C:\path\python.exe, else the py launcher's 3.8 is used.
setlocal
fsutil dirty query %SystemDrive% >nul 2>&1
if errorlevel 1 (
    echo Please run as administrator: right-click install.cmd, "Run as administrator".
    exit /b 2
)
set "PY=%POSASSIST_PYTHON%"
if not defined PY for /f "delims=" %%i in ('py -3.8 -c "import sys; print(sys.executable)" 2^>nul') do set "PY=%%i"
if not defined PY if exist "%ProgramFiles%\Python38\python.exe" set "PY=%ProgramFiles%\Python38\python.exe"
if not defined PY if exist "%ProgramFiles(x86)%\Python38-32\python.exe" set "PY=%ProgramFiles(x86)%\Python38-32\python.exe"
if not defined PY (
    echo No Python 3.8 found. Install Python 3.8.10 for all users first, or set POSASSIST_PYTHON.
    exit /b 2
)
"%PY%" -I "%~dp0installer.py" install %*
exit /b %errorlevel%
