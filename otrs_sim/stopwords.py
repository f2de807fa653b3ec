"""The stop words of Znuny 6.5.10's article search index, as its stock SysConfig sets them
(`Ticket::SearchIndex::StopWords###<language>`, every language on): words the index leaves
out, so a search for one of them finds nothing. Read from the running server. Words are
separated by commas because one Spanish entry ("por qué") holds a space, which no word of
a text split on whitespace can match.
"""

from __future__ import annotations

STOP_WORDS_BY_LANGUAGE: dict[str, str] = {
    "de": (
        "aber,als,am,an,auch,auf,aus,bei,bin,bis,bist,da,dadurch,daher,darum,das,daß,dass,dein,"
        "deine,dem,den,der,des,dessen,deshalb,die,dies,dieser,dieses,doch,dort,du,durch,ein,eine,"
        "einem,einen,einer,eines,er,es,euer,eure,für,hatte,hatten,hattest,hattet,hier,hinter,ich,"
        "ihr,ihre,im,in,ist,ja,jede,jedem,jeden,jeder,jedes,jener,jenes,jetzt,kann,kannst,können,"
        "könnt,machen,mein,meine,mit,muß,mußt,musst,müssen,müßt,nach,nachdem,nein,nicht,nun,oder,"
        "seid,sein,seine,sich,sie,sind,soll,sollen,sollst,sollt,sonst,soweit,sowie,und,unser,"
        "unsere,unter,vom,von,vor,wann,warum,was,weiter,weitere,wenn,wer,werde,werden,werdet,"
        "weshalb,wie,wieder,wieso,wir,wird,wirst,wo,woher,wohin,zu,zum,zur,über"
    ),
    "en": (
        "a,about,above,after,again,against,all,am,an,and,any,are,aren't,as,at,be,because,been,"
        "before,being,below,between,both,but,by,can't,cannot,could,couldn't,did,didn't,do,does,"
        "doesn't,doing,don't,down,during,each,few,for,from,further,had,hadn't,has,hasn't,have,"
        "haven't,having,he,he'd,he'll,he's,her,here,here's,hers,herself,him,himself,his,how,"
        "how's,i,i'd,i'll,i'm,i've,if,in,into,is,isn't,it,it's,its,itself,let's,me,more,most,"
        "mustn't,my,myself,no,nor,not,of,off,on,once,only,or,other,ought,our,ours,ourselves,out,"
        "over,own,same,shan't,she,she'd,she'll,she's,should,shouldn't,so,some,such,than,that,"
        "that's,the,their,theirs,them,themselves,then,there,there's,these,they,they'd,they'll,"
        "they're,they've,this,those,through,to,too,under,until,up,very,was,wasn't,we,we'd,we'll,"
        "we're,we've,were,weren't,what,what's,when,when's,where,where's,which,while,who,who's,"
        "whom,why,why's,with,won't,would,wouldn't,you,you'd,you'll,you're,you've,your,yours,"
        "yourself,yourselves"
    ),
    "es": (
        "un,una,unas,unos,uno,sobre,todo,también,tras,otro,algún,alguno,alguna,algunos,algunas,"
        "ser,es,soy,eres,somos,sois,estoy,esta,estamos,estais,estan,como,en,para,atras,porque,"
        "por qué,estado,estaba,ante,antes,siendo,ambos,pero,por,poder,puede,puedo,podemos,podeis,"
        "pueden,fui,fue,fuimos,fueron,hacer,hago,hace,hacemos,haceis,hacen,cada,fin,incluso,"
        "primero,desde,conseguir,consigo,consigue,consigues,conseguimos,consiguen,ir,voy,va,"
        "vamos,vais,van,vaya,gueno,ha,tener,tengo,tiene,tenemos,teneis,tienen,el,la,lo,las,los,"
        "su,aqui,mio,tuyo,ellos,ellas,nos,nosotros,vosotros,vosotras,si,dentro,solo,solamente,"
        "saber,sabes,sabe,sabemos,sabeis,saben,ultimo,largo,bastante,haces,muchos,aquellos,"
        "aquellas,sus,entonces,tiempo,verdad,verdadero,verdadera,cierto,ciertos,cierta,ciertas,"
        "intentar,intento,intenta,intentas,intentamos,intentais,intentan,dos,bajo,arriba,encima,"
        "usar,uso,usas,usa,usamos,usais,usan,emplear,empleo,empleas,emplean,ampleamos,empleais,"
        "valor,muy,era,eras,eramos,eran,modo,bien,cual,cuando,donde,mientras,quien,con,entre,sin,"
        "trabajo,trabajar,trabajas,trabaja,trabajamos,trabajais,trabajan,podria,podrias,"
        "podriamos,podrian,podriais,yo,aquel"
    ),
    "fr": (
        "alors,au,aucuns,aussi,autre,avant,avec,avoir,bon,car,ce,cela,ces,ceux,chaque,ci,comme,"
        "comment,dans,des,du,dedans,dehors,depuis,deux,devrait,doit,donc,dos,droite,début,elle,"
        "elles,en,encore,essai,est,et,eu,fait,faites,fois,font,force,haut,hors,ici,il,ils,je,"
        "juste,la,le,les,leur,là,ma,maintenant,mais,mes,mine,moins,mon,mot,même,ni,nommés,notre,"
        "nous,nouveaux,ou,où,par,parce,parole,pas,personnes,peut,peu,pièce,plupart,pour,pourquoi,"
        "quand,que,quel,quelle,quelles,quels,qui,sa,sans,ses,seulement,si,sien,son,sont,sous,"
        "soyez,sujet,sur,ta,tandis,tellement,tels,tes,ton,tous,tout,trop,très,tu,valeur,voie,"
        "voient,vont,votre,vous,vu,ça,étaient,état,étions,été,être"
    ),
    "it": (
        "a,adesso,ai,al,alla,allo,allora,altre,altri,altro,anche,ancora,avere,aveva,avevano,ben,"
        "buono,che,chi,cinque,comprare,con,consecutivi,consecutivo,cosa,cui,da,del,della,dello,"
        "dentro,deve,devo,di,doppio,due,e,ecco,fare,fine,fino,fra,gente,giu,ha,hai,hanno,ho,il,"
        "indietro,invece,io,la,lavoro,le,lei,lo,loro,lui,lungo,ma,me,meglio,molta,molti,molto,"
        "nei,nella,no,noi,nome,nostro,nove,nuovi,nuovo,o,oltre,ora,otto,peggio,pero,persone,piu,"
        "poco,primo,promesso,qua,quarto,quasi,quattro,quello,questo,qui,quindi,quinto,rispetto,"
        "sara,secondo,sei,sembra,sembrava,senza,sette,sia,siamo,siete,solo,sono,sopra,"
        "soprattutto,sotto,stati,stato,stesso,su,subito,sul,sulla,tanto,te,tempo,terzo,tra,tre,"
        "triplo,ultimo,un,una,uno,va,vai,voi,volte,vostro"
    ),
    "nl": (
        "de,zijn,een,en,in,je,het,van,op,ze,hebben,het,hij,niet,met,er,dat,die,te,wat,voor,naar,"
        "gaan,kunnen,zeggen,dat,maar,aan,veel,zijn,worden,uit,ook,komen,als,om,moeten,we,doen,"
        "bij,goed,haar,dan,nog,of,maken,zo,wel,mijn,zien,over,willen,staan,door,kijken,zullen,"
        "heel,nu,weten,zitten,hem,schrijven,vinden,woord,hoe,geen,dit,mens,al,jij,ander,groot,"
        "waar,maar,weer,kind,me,vragen,een,denken,twee,horen,iets,deze,krijgen,ons,zich,lezen,"
        "hun,welk,zin,laten,mogen,hier,jullie,toch,geven,jaar,tegen,al,eens,echt,houden,alleen,"
        "lopen,mee,ja,roepen,tijd,dag,elkaar,even,lang,land,liggen,waarom,zetten,vader,laat,"
        "beginnen,blijven,nee,moeder,huis,nou,na,af,keer,dus,tot,vertellen,wie,net,jou,les,want,"
        "man,nieuw,elk,tekst,omdat,gebruiken,u"
    ),
}

STOP_WORDS: frozenset[str] = frozenset(
    word.lower() for words in STOP_WORDS_BY_LANGUAGE.values() for word in words.split(",")
)
