// Real PythonQt, initialised as Slicer 5.10 does (Python first, then PythonQt::init with
// PythonAlreadyInitialized, no setEnableThreadSupport), two QTimers for Python, and a C++
// 5 ms timer that records how late it fires (the GUI's responsiveness).
#include <PythonQt.h>
#include <QCoreApplication>
#include <QElapsedTimer>
#include <QTimer>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  QCoreApplication app(argc, argv);
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.parse_argv = 0;
  PyConfig_SetBytesArgv(&config, argc - 1, argv + 1);
  PyConfig_SetString(&config, &config.program_name, L"pqreal");
  PyStatus status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) Py_ExitStatusException(status);
  PythonQt::init(PythonQt::PythonAlreadyInitialized);
  QTimer pollTimer, yieldTimer, input;
  QElapsedTimer clock;
  clock.start();
  qint64 due = 5, worst = 0;
  input.setTimerType(Qt::PreciseTimer);
  input.setInterval(5);
  QObject::connect(&input, &QTimer::timeout, [&]() {
    qint64 now = clock.elapsed(), late = now - due;
    if (late > worst) worst = late;
    due = now + 5;
  });
  PythonQtObjectPtr main = PythonQt::self()->getMainModule();
  main.addObject("pollTimer", &pollTimer);
  main.addObject("yieldTimer", &yieldTimer);
  main.addObject("app", &app);
  main.evalFile(QString::fromLocal8Bit(argv[1]));
  input.start();
  int code = app.exec();
  std::printf("INPUT_LATENCY_MAX_MS %lld\n", (long long)worst);
  std::fflush(stdout);
  return code;
}
