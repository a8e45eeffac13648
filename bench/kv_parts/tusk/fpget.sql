SELECT v FROM plain WHERE k = '0';
